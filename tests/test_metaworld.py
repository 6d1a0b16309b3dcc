"""Meta-World families: the benchmark's own splits, the kit, the class pool, success end to end.

Building ML10 takes ~10 s and ML45 tens of seconds: ``meta_rl.envs.metaworld.benchmark``
caches each object per process, so every test here shares one build of each.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections import Counter
from pathlib import Path

import gymnasium as gym
import metaworld
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.envs.registration import register

import meta_rl.envs
from meta_rl.agents.policies import make_policy
from meta_rl.config import EvalSettings, load_config
from meta_rl.envs import TaskEnv
from meta_rl.envs import metaworld as mw
from meta_rl.envs.metaworld_ids import ENV_NAMES, family_id
from meta_rl.envs.testing import check_task_env
from meta_rl.episodes import Episodes
from meta_rl.evaluation import evaluate_run
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers.process import ProcessSampler
from meta_rl.trainer import train

CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"
ML1_REACH = family_id("ML1", "reach-v3")
ML10 = family_id("ML10")


def all_tasks(env: TaskEnv, split: str) -> list[dict]:
    size = len(env.classes[split]) * mw.GOALS_PER_CLASS
    return [env._task_at(split, i) for i in range(size)]


def resolved(tasks: list[dict]) -> list[tuple[str, bytes]]:
    return [(t.env_name, t.data) for t in map(mw.metaworld_task, tasks)]


def goal_key(task: metaworld.Task) -> tuple[str, bytes]:
    """A task's identity: its class and its goal / object positions."""
    return task.env_name, pickle.loads(task.data)["rand_vec"].tobytes()


# ---------------------------------------------------------------- registration and splits


def test_every_metaworld_env_has_one_family_and_the_names_match_metaworld():
    assert list(ENV_NAMES) == list(metaworld.ML1.ENV_NAMES)
    assert len(meta_rl.envs.METAWORLD_IDS) == 52
    for env_id in (ML1_REACH, family_id("ML1", "pick-place-v3"), ML10, family_id("ML45")):
        assert env_id in meta_rl.envs.METAWORLD_IDS
        assert gym.spec(env_id).max_episode_steps == 500


def test_ml1_splits_are_the_benchmarks_own_and_disjoint():
    env = gym.make(ML1_REACH).unwrapped
    independent = metaworld.ML1("reach-v3", seed=0)  # built apart from our cache
    for split in mw.SPLITS:
        ours = resolved(all_tasks(env, split))
        assert ours == [(t.env_name, t.data) for t in getattr(independent, f"{split}_tasks")]
    train_goals = {goal_key(mw.metaworld_task(t)) for t in all_tasks(env, "train")}
    test_goals = {goal_key(mw.metaworld_task(t)) for t in all_tasks(env, "test")}
    assert len(train_goals) == len(test_goals) == 50 and not train_goals & test_goals


@pytest.mark.parametrize("bench", ["ML10", "ML45"])
def test_ml10_ml45_splits_are_the_benchmarks_and_test_classes_never_train(bench):
    env = gym.make(family_id(bench)).unwrapped
    benchmark = mw.benchmark(bench, None, 0)
    for split in mw.SPLITS:
        own = getattr(benchmark, f"{split}_tasks")
        assert resolved(all_tasks(env, split)) == [(t.env_name, t.data) for t in own]
        assert list(getattr(benchmark, f"{split}_classes")) == env.classes[split]
    assert len(env.classes["test"]) == 5
    assert not set(env.classes["train"]) & set(env.classes["test"])
    train_goals = {goal_key(t) for t in benchmark.train_tasks}
    assert not train_goals & {goal_key(t) for t in benchmark.test_tasks}
    rng = np.random.default_rng(0)
    drawn = env.sample_tasks(200, rng)
    assert {t["split"] for t in drawn} == {"train"}
    assert {t["env_name"] for t in drawn} <= set(env.classes["train"])
    held_out = env.sample_held_out_tasks(50, rng)
    assert {t["split"] for t in held_out} == {"test"}
    assert {t["env_name"] for t in held_out} <= set(env.classes["test"])
    assert len({json.dumps(t) for t in env.sample_tasks(20, rng)}) == 20  # no repeats


def test_ml10_meta_batches_are_balanced_over_classes_as_garage_draws_them():
    env = gym.make(ML10).unwrapped
    rng = np.random.default_rng(3)
    for n, split, per_class in [(10, "train", {1}), (20, "train", {2}), (10, "test", {2})]:
        counts = Counter(t["env_name"] for t in env._draw(split, n, rng))
        assert set(counts) == set(env.classes[split]) and set(counts.values()) == per_class
    counts = Counter(t["env_name"] for t in env.sample_tasks(15, rng))
    assert sum(counts.values()) == 15 and sorted(counts.values()) == [1] * 5 + [2] * 5
    # one task at a time (the pretrained baseline's draw) still reaches every class
    assert len({env.sample_tasks(1, rng)[0]["env_name"] for _ in range(200)}) == 10
    # the goals of a class repeat only once its 50 are used up
    goals = [t["index"] for t in env.sample_tasks(500, rng)]
    assert sorted(goals) == list(range(500))


def test_ml1_draw_is_a_uniform_draw_of_its_50_goals():
    env = gym.make(ML1_REACH).unwrapped
    drawn = [t["index"] for t in env.sample_tasks(20, np.random.default_rng(5))]
    assert drawn == list(np.random.default_rng(5).choice(50, size=20, replace=False))


def test_bad_tasks_are_refused_naming_the_key():
    env = gym.make(ML10).unwrapped
    good = env.task
    for change, match in [
        ({"split": "valid"}, r"task\['split'\] = 'valid'"),
        ({"index": 499}, r"task\['env_name'\] = 'reach-v3', but train task 499 is 'basketball"),
        ({"split": "test", "index": 300}, r"task\['index'\] = 300 is outside the test split"),
        ({"seed": 3}, r"task\['seed'\] = 3, but this family is 0"),
        ({"benchmark": "ML45"}, r"task\['benchmark'\] = 'ML45'"),
        ({"env_name": 7}, r"task\['env_name'\] = 7 is outside"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.task = {**good, **change}
    assert env.task == good


# ---------------------------------------------------------------- the kit and the class pool


@pytest.mark.parametrize("env_id", [ML1_REACH, ML10])
def test_metaworld_families_pass_the_kit(env_id):
    check_task_env(env_id, seed=0)


def test_ml10_envs_share_one_model_per_class_and_every_class_has_the_same_spaces():
    env = gym.make(ML10)
    base = env.unwrapped
    first = {}
    for name in base.classes["train"] + base.classes["test"]:
        split = "train" if name in base.classes["train"] else "test"
        index = base.classes[split].index(name) * mw.GOALS_PER_CLASS
        obs, _ = env.reset(options={"task": base._task_at(split, index)})
        first[name] = base._sim
        assert base._sim.observation_space == base.observation_space
        assert base.observation_space.contains(obs)
    task = base._task_at("train", 0)  # back to reach-v3: the pooled model, not a new one
    env.reset(options={"task": task})
    assert base._sim is first["reach-v3"]
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert "success" in info and np.isfinite(reward) and not (terminated or truncated)
    env.close()


# ---------------------------------------------------------------- success in the samplers


class SuccessAt(TaskEnv):
    """Reports ``success`` from step ``task["at"]`` on (0: never); reward = step index."""

    task_description = "success from step at ~ U{0..6}"

    def __init__(self) -> None:
        self.task_space = spaces.Dict({"at": spaces.Discrete(7)})
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.task = {"at": 0}
        self._t = 0

    def sample_tasks(self, n, rng):
        return [{"at": int(a)} for a in rng.integers(7, size=n)]

    def _apply_task(self, task):
        self._at = task["at"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        success = 0 < self._at <= self._t
        return np.full(1, self._t, np.float32), float(self._t), False, False, {"success": success}


register(id="MetaRLTest/SuccessAt-v0", entry_point=SuccessAt, max_episode_steps=6)


@pytest.mark.parametrize("backend", ["vector", "process"])
def test_samplers_carry_info_success_step_by_step(backend):
    kwargs = {"num_tasks": 3, "episodes_per_task": 2, "seed": 0}
    if backend == "vector":
        sampler = VectorSampler("MetaRLTest/SuccessAt-v0", **kwargs)
    else:
        sampler = ProcessSampler("MetaRLTest/SuccessAt-v0", num_workers=2, **kwargs)
    policy = make_policy(sampler.observation_space, sampler.action_space, (4,), "tanh")
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 3)
    tasks = [{"at": 0}, {"at": 2}, {"at": 6}]
    try:
        episodes = sampler.sample(policy, params, tasks)
    finally:
        sampler.close()
    assert sampler.tracks_success and episodes.success.dtype == torch.bool
    steps = torch.arange(1, 7).view(6, 1, 1)
    at = torch.tensor([0, 2, 6]).view(1, 3, 1)
    assert torch.equal(episodes.success, ((at > 0) & (steps >= at)).expand(6, 3, 2))
    assert episodes.task_success().tolist() == [0.0, 1.0, 1.0]


def test_success_after_an_episode_ended_does_not_count():
    ones = torch.ones(4, 1, 2)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(4, 1, 1).expand(4, 1, 2).clone()
    success = torch.zeros(4, 1, 2, dtype=torch.bool)
    success[3, 0, 0] = True  # after the end: masked
    success[1, 0, 1] = True
    e = Episodes(torch.zeros(5, 1, 2, 1), ones, ones, mask, ones.bool(), ones.bool(), ones, success)
    assert e.task_success().tolist() == [0.5] and e.success_rate() == 0.5


def test_a_family_without_success_is_unchanged():
    sampler = VectorSampler("MetaRL/Navigation2D-v0", 2, 2, seed=0)
    policy = make_policy(sampler.observation_space, sampler.action_space, (4,), "tanh")
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 2)
    episodes = sampler.sample(policy, params, sampler.sample_tasks())
    sampler.close()
    assert not sampler.tracks_success and episodes.success is None
    assert "success" not in episodes.tensors()


# ---------------------------------------------------------------- training and evaluation


@pytest.mark.parametrize("backend", ["vector", "process"])
def test_one_tiny_iteration_on_ml1_logs_success_and_evaluates_on_the_test_split(tmp_path, backend):
    config = load_config(
        CONFIGS / "maml_metaworld_ml1_reach-v3.yaml",
        [
            "env.max_episode_steps=20",
            "train.meta_batch_size=2",
            "train.episodes_per_task=2",
            "train.iterations=1",
            f"train.sampler={backend}",
            "train.num_workers=2",
            "policy.hidden_sizes=[8]",
        ],
    )
    run = train(config, run_dir=tmp_path / "run")
    with (run / "progress.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    for key in ("success_pre_adapt", "success_post_adapt"):
        assert 0.0 <= float(row[key]) <= 1.0
    if backend == "process":
        return
    settings = EvalSettings(tasks=2, steps=1, episodes=2)
    (curve,) = evaluate_run(run, settings, out_dir=tmp_path / "eval")
    assert len(curve.task_success) == 2 and all(len(s) == 2 for s in curve.task_success)
    meta = json.loads((tmp_path / "eval" / "adaptation.json").read_text())
    assert {t["split"] for t in meta["tasks"]} == {"test"} and "success_protocol" in meta
    with (tmp_path / "eval" / "adaptation.csv").open() as f:
        assert "success_rate" in next(csv.DictReader(f))


def test_navigation_progress_has_no_success_columns(tmp_path):
    small = ["train.iterations=1", "train.meta_batch_size=2", "train.episodes_per_task=2"]
    config = load_config(CONFIGS / "maml_navigation2d_ci.yaml", small)
    run = train(config, run_dir=tmp_path / "run")
    with (run / "progress.csv").open() as f:
        assert not any(key.startswith("success") for key in next(csv.DictReader(f)))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*_metaworld_*.yaml")), ids=lambda p: p.stem)
def test_metaworld_configs_load_with_the_horizon_500_families(path):
    config = load_config(path)
    assert config.env.id in meta_rl.envs.METAWORLD_IDS
    assert gym.spec(config.env.id).max_episode_steps == 500 and config.env.max_episode_steps is None


def test_reptile_runs_ml10_on_the_process_sampler(tmp_path):
    config = load_config(
        CONFIGS / "reptile_metaworld_ml10.yaml",
        [
            "env.max_episode_steps=10",
            "train.meta_batch_size=3",
            "train.episodes_per_task=1",
            "train.iterations=1",
            "train.num_workers=2",
            "algo.num_inner_steps=1",
            "policy.hidden_sizes=[8]",
        ],
    )
    run = train(config, run_dir=tmp_path / "run")
    with (run / "progress.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert 0.0 <= float(row["success_post_adapt"]) <= 1.0


def test_the_oracle_sees_the_hidden_goal_on_ml1_and_refuses_mixed_benchmarks():
    """ML1's oracle baseline observes the goal Meta-World hides (its task is an index into the
    benchmark's lists, not a parameter vector); ML10 / ML45 have no oracle (unseen classes)."""
    from meta_rl.agents.pretrained import oracle_env_id

    env = gym.make(oracle_env_id(ML1_REACH))
    family = env.unwrapped
    assert env.observation_space.shape == (39 + 3,)
    goals = []
    for task in family.sample_tasks(2, np.random.default_rng(0)):
        obs, _ = env.reset(options={"task": task})
        goal = obs[-3:]
        assert np.array_equal(goal, np.float32(family._sim._target_pos))
        assert np.array_equal(env.step(env.action_space.sample())[0][-3:], goal)
        goals.append(goal)
    assert not np.array_equal(goals[0], goals[1])
    env.close()
    with pytest.raises(ValueError, match="ML10 has no oracle"):
        gym.make(oracle_env_id(ML10))
    from meta_rl.config import ConfigError
    from meta_rl.evaluation import ppo_baseline_spec

    config = load_config(CONFIGS / "maml_metaworld_ml10.yaml")
    with pytest.raises(ConfigError, match="baseline oracle: ML10 has no oracle"):
        ppo_baseline_spec("oracle", config, 1000)
