"""The batched MuJoCo backend against the Gymnasium families: same numbers, bitwise.

For the same tasks, reset seeds and actions, ``MuJoCoBatch`` must give the Gymnasium family's
observations, rewards, reward terms, terminated/truncated flags and reset states. Everything is
compared for exact equality (float64), which is stronger than the 1e-12 the backend promises;
the Ant runs long enough (random actions, 40-step horizon) to fall, so termination, survive
bonus and live contact forces are all exercised.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

import meta_rl.envs  # noqa: F401
from meta_rl.agents.policies import make_policy
from meta_rl.envs.half_cheetah import HalfCheetahTaskEnv
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import MuJoCoSampler, VectorSampler
from meta_rl.samplers.mujoco import MuJoCoBatch, check_batchable, supports
from meta_rl.samplers.process import ProcessSampler

FAMILIES = [
    "MetaRL/HalfCheetahVel-v0",
    "MetaRL/HalfCheetahDir-v0",
    "MetaRL/AntVel-v0",
    "MetaRL/AntDir-v0",
    "MetaRL/AntGoal-v0",
]
HORIZON = 40


def _step_both(
    env_id: str, num_envs: int, steps: int, seed: int, threads: int = 1, **env_kwargs: Any
) -> int:
    """Step Gymnasium envs and a batch side by side with the same random actions; compare.

    Returns the number of terminations seen."""
    rng = np.random.default_rng(seed)
    env_kwargs["max_episode_steps"] = HORIZON
    envs = [gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
    batch = MuJoCoBatch(env_id, num_envs, env_kwargs=env_kwargs, threads=threads)
    tasks = envs[0].unwrapped.sample_tasks(num_envs, rng)
    seeds = rng.integers(2**31, size=num_envs).tolist()
    expected = []
    for env, task, s in zip(envs, tasks, seeds, strict=True):
        env.unwrapped.task = task
        expected.append(env.reset(seed=s)[0])
    np.testing.assert_array_equal(batch.reset(tasks, seeds), np.stack(expected))
    active = np.ones(num_envs, dtype=bool)
    terminations, max_force = 0, 0.0
    for _ in range(steps):
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            break
        actions = rng.uniform(-1, 1, (num_envs, batch.model.nu)).astype(np.float32)[rows]
        obs, rewards, terminated, truncated, terms = batch.step(rows, actions)
        for j, i in enumerate(rows):
            o, r, te, tr, info = envs[i].step(actions[j])
            np.testing.assert_array_equal(obs[j], o)
            assert rewards[j] == r
            assert (terminated[j], truncated[j]) == (te, tr)
            for key, value in terms.items():
                np.testing.assert_array_equal(value[j], info[key], err_msg=key)
        terminations += int(terminated.sum())
        max_force = max(max_force, float(np.abs(batch.cfrc_ext[rows]).max()) if batch.ant else 0)
        active[rows] = ~(terminated | truncated)
    assert max_force > 0 or not batch.ant  # live contact forces were compared
    return terminations


@pytest.mark.parametrize("env_id", FAMILIES)
def test_batch_equals_gymnasium_family(env_id: str) -> None:
    _step_both(env_id, num_envs=6, steps=HORIZON + 5, seed=0)


def test_ant_termination() -> None:
    """A tighter healthy range (a v5 argument) makes random Ants terminate within the horizon;
    falls, the survive bonus paid only while healthy and the stopped rows are all compared."""
    assert _step_both("MetaRL/AntGoal-v0", 6, HORIZON, seed=0, healthy_z_range=(0.3, 0.8)) > 0


def test_threads_change_nothing() -> None:
    _step_both("MetaRL/AntVel-v0", num_envs=8, steps=20, seed=1, threads=3)


def test_reset_reuses_each_envs_generator_without_a_seed() -> None:
    """``seed=None`` continues the env's own reset stream, as ``env.reset()`` does."""
    env = gym.make("MetaRL/HalfCheetahVel-v0")
    batch = MuJoCoBatch("MetaRL/HalfCheetahVel-v0", 1)
    task = env.unwrapped.task
    env.reset(seed=5)
    batch.reset([task], [5])
    np.testing.assert_array_equal(batch.reset([task], [None]), env.reset()[0][None])


def test_rollout_warmstart_is_why_rollout_is_not_used() -> None:
    """The documented reason: dropping ``qacc_warmstart`` between steps (all that a
    ``mujoco.rollout`` call per env step can do) leaves the Gymnasium trajectory."""
    a = gym.make("MetaRL/HalfCheetahVel-v0").unwrapped
    b = gym.make("MetaRL/HalfCheetahVel-v0").unwrapped
    a.reset(seed=3)
    b.reset(seed=3)
    rng = np.random.default_rng(0)
    gap = 0.0
    for _ in range(100):
        action = rng.uniform(-1, 1, 6)
        b.data.qacc_warmstart[:] = 0
        gap = max(gap, float(np.abs(a.step(action)[0] - b.step(action)[0]).max()))
    assert gap > 1e-9


def test_unsupported_families_are_refused() -> None:
    assert supports("MetaRL/AntGoal-v0")
    assert not supports("MetaRL/Navigation2D-v0")
    with pytest.raises(ValueError, match="Navigation2DEnv is not one"):
        MuJoCoBatch("MetaRL/Navigation2D-v0", 2)

    class Changed(HalfCheetahTaskEnv):
        def _get_obs(self) -> np.ndarray:
            return super()._get_obs()

    env = gym.make("MetaRL/HalfCheetahVel-v0")
    env.unwrapped.__class__ = type("Custom", (Changed, type(env.unwrapped)), {})
    with pytest.raises(ValueError, match="overrides _get_obs"):
        check_batchable(env)


class HalfCheetahTargetEnv(HalfCheetahTaskEnv):
    """A user family on the base: run to a target x, task ``{"target": x}``."""

    def __init__(self, **kwargs: Any) -> None:
        from gymnasium import spaces
        from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

        HalfCheetahEnv.__init__(self, ctrl_cost_weight=0.05, **kwargs)
        self.task_space = spaces.Dict({"target": spaces.Box(-5.0, 5.0, shape=(), dtype=np.float64)})
        self.task = {"target": 1.0}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"target": float(x)} for x in rng.uniform(-5, 5, size=n)]

    def _apply_task(self, task: dict[str, Any]) -> None:
        pass

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> Any:
        distance = np.abs(qpos[..., 0] - task["target"])
        return -distance, {"distance": distance}


gym.register("MetaRLTest/HalfCheetahTarget-v0", HalfCheetahTargetEnv, max_episode_steps=200)


def test_user_family_with_a_declared_reward() -> None:
    _step_both("MetaRLTest/HalfCheetahTarget-v0", num_envs=3, steps=10, seed=2)


def _episodes(sampler_cls: type, env_id: str, **kwargs: Any) -> Any:
    sampler = sampler_cls(env_id, 3, 2, seed=7, max_episode_steps=HORIZON, **kwargs)
    policy = make_policy(sampler.observation_space, sampler.action_space, (16,), "tanh")
    policy.reset_parameters(torch.Generator().manual_seed(0))
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 3)
    try:
        tasks = sampler.sample_tasks()
        return [sampler.sample(policy, params, tasks) for _ in range(2)]
    finally:
        sampler.close()


@pytest.fixture(params=[1, 2], ids=["torch1thread", "torch2threads"])
def torch_threads(request: pytest.FixtureRequest) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("env_id", ["MetaRL/HalfCheetahDir-v0", "MetaRL/AntVel-v0"])
def test_same_seed_same_episodes_as_vector(env_id: str, torch_threads: int) -> None:
    """Bitwise: the batch reproduces every float64 the Gymnasium envs compute, in process and
    in worker processes (compared with workers stepping Gymnasium envs on the same shards: how
    the policy's products round on a shard is the process sampler's own business)."""
    pairs = [
        ("in-process", _episodes(VectorSampler, env_id), _episodes(MuJoCoSampler, env_id)),
        (
            "workers",
            _episodes(ProcessSampler, env_id, num_workers=2),
            _episodes(ProcessSampler, env_id, num_workers=2, env_backend="mujoco"),
        ),
    ]
    for label, expected, got in pairs:
        for a, b in zip(expected, got, strict=True):
            for name in ("observations", "actions", "rewards", "mask", "terminated"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (label, name)
            assert torch.equal(a.truncated, b.truncated)
        assert expected[0].terminated.any() or "Cheetah" in env_id


def test_shared_model_is_the_gymnasium_one() -> None:
    """The batch steps the family's own compiled model (no copy that could drift)."""
    env = gym.make("MetaRL/AntDir-v0")
    batch = MuJoCoBatch("MetaRL/AntDir-v0", 1)
    assert batch.model is env.unwrapped.model
    assert isinstance(batch.datas[0], mujoco.MjData)


def _config(env_id: str, *overrides: str) -> Any:
    from meta_rl.config import config_from_dict

    base = {"env": {"id": env_id}, "train": {"meta_batch_size": 2, "episodes_per_task": 1}}
    return config_from_dict(base, ["train.sampler=mujoco", *overrides])


def test_config_selects_the_batched_backend() -> None:
    from meta_rl.builders import build_sampler
    from meta_rl.config import ConfigError

    cpu = torch.device("cpu")
    sampler = build_sampler(_config("MetaRL/AntDir-v0"), cpu)
    assert isinstance(sampler, MuJoCoSampler)
    sampler.close()
    sampler = build_sampler(_config("MetaRL/HalfCheetahVel-v0", "train.num_workers=2"), cpu)
    assert isinstance(sampler, ProcessSampler) and len(sampler.worker_pids) == 2
    sampler.close()
    with pytest.raises(ConfigError, match=r"train\.sampler: .*Navigation2DEnv is not one"):
        build_sampler(_config("MetaRL/Navigation2D-v0"), cpu)
