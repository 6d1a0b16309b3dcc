"""Comparison baselines: the oracle (and only the oracle) sees the task; PPO training, caching."""

from __future__ import annotations

import dataclasses
import random

import gymnasium as gym
import numpy as np
import pytest
import torch

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.agents.policies import make_policy
from meta_rl.agents.pretrained import (
    FlatStop,
    PPOBaselineSpec,
    RandomTaskWrapper,
    TaskObservationWrapper,
    baseline_spec,
    cache_path,
    load_or_train_ppo_baseline,
    oracle_env_id,
    task_vector,
    train_ppo_baseline,
    zoo_body,
)
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler

NAV = "MetaRL/Navigation2D-v0"
CHEETAH_DIR = "MetaRL/HalfCheetahDir-v0"
TINY_PPO = {
    "n_envs": 2,
    "ppo_kwargs": {"n_steps": 16, "batch_size": 16, "n_epochs": 1},
}


def tiny_spec(oracle: bool, **changes) -> PPOBaselineSpec:
    spec = PPOBaselineSpec(
        env_id=NAV,
        oracle=oracle,
        total_timesteps=32,
        seed=0,
        hidden_sizes=(8,),
        max_episode_steps=10,
        **TINY_PPO,
    )
    return dataclasses.replace(spec, **changes)


def test_task_vector_flattens_in_task_space_order():
    env = gym.make(NAV).unwrapped
    assert task_vector({"goal": [0.25, -0.5]}, env.task_space).tolist() == [0.25, -0.5]
    cheetah = gym.make(CHEETAH_DIR).unwrapped
    assert task_vector({"direction": -1}, cheetah.task_space).tolist() == [-1.0]


@pytest.mark.parametrize(
    ("env_id", "task", "tail"),
    [
        (NAV, {"goal": [0.3, -0.2]}, [0.3, -0.2]),
        (CHEETAH_DIR, {"direction": -1}, [-1.0]),
    ],
)
def test_oracle_env_appends_the_task_after_retasking(env_id, task, tail):
    base = gym.make(env_id)
    oracle = gym.make(oracle_env_id(env_id))
    base_dim = base.observation_space.shape[0]
    assert oracle.observation_space.shape == (base_dim + len(tail),)
    assert oracle.spec.max_episode_steps == base.spec.max_episode_steps
    oracle.set_wrapper_attr("task", task)  # what the sampler does: reaches the family
    assert oracle.unwrapped.task == task
    obs, _ = oracle.reset(seed=0)
    base.set_wrapper_attr("task", task)
    base_obs, _ = base.reset(seed=0)
    np.testing.assert_allclose(obs[:base_dim], base_obs.astype(np.float32))
    np.testing.assert_allclose(obs[base_dim:], np.asarray(tail, dtype=np.float32))
    oracle.action_space.seed(0)
    obs, *_ = oracle.step(oracle.action_space.sample())
    np.testing.assert_allclose(obs[base_dim:], np.asarray(tail, dtype=np.float32))


class Still(torch.nn.Module):
    """Near-deterministic Gaussian that ignores the observation (so both samplers act alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.full((2,), 0.05))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        mean = self.mean.expand(*obs.shape[:-1], 2)
        normal = torch.distributions.Normal(mean, 0.01, validate_args=False)
        return torch.distributions.Independent(normal, 1, validate_args=False)


def test_only_the_oracle_sampler_observes_the_task():
    tasks = [{"goal": [0.4, -0.1]}, {"goal": [-0.3, 0.2]}]
    plain = VectorSampler(NAV, 2, 2, seed=0, max_episode_steps=5)
    oracle = VectorSampler(oracle_env_id(NAV), 2, 2, seed=0, max_episode_steps=5)
    assert plain.obs_dim == 2 and oracle.obs_dim == 4
    policy = Still()
    params = expand_to_tasks(policy_params(policy), 2)
    plain_obs = plain.sample(policy, params, tasks).observations
    oracle_obs = oracle.sample(policy, params, tasks).observations
    assert plain_obs.shape[-1] == 2
    # the oracle sees the plain family's positions (same seed, same actions) plus the goal
    torch.testing.assert_close(oracle_obs[..., :2], plain_obs, rtol=0, atol=0)
    goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float32)
    expected = goals[None, :, None, :].expand(plain_obs.shape[0], 2, 2, 2)
    torch.testing.assert_close(oracle_obs[..., 2:], expected, rtol=0, atol=0)
    plain.close()
    oracle.close()


def test_random_task_wrapper_draws_from_its_own_generator():
    env = RandomTaskWrapper(gym.make(NAV), np.random.default_rng(7))
    reference = gym.make(NAV).unwrapped.sample_tasks(1, np.random.default_rng(7))[0]
    env.reset(seed=0)
    assert env.unwrapped.task == reference
    env.reset(seed=0)
    assert env.unwrapped.task != reference  # a new task every episode
    env.reset(options={"task": {"goal": [0.1, 0.1]}})
    assert env.unwrapped.task == {"goal": [0.1, 0.1]}


def test_ppo_baselines_see_the_right_observations_and_leave_global_rngs_alone():
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    torch_state = torch.get_rng_state().clone()
    pretrained, _, _ = train_ppo_baseline(tiny_spec(oracle=False))
    oracle, _, _ = train_ppo_baseline(tiny_spec(oracle=True))
    assert pretrained.observation_space.shape == (2,)
    assert oracle.observation_space.shape == (4,)
    assert pretrained.num_timesteps == oracle.num_timesteps == 32
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state
    assert torch.equal(torch.get_rng_state(), torch_state)
    # same spec, same seed -> the same weights
    again, _, _ = train_ppo_baseline(tiny_spec(oracle=False))
    for a, b in zip(
        pretrained.policy.state_dict().values(), again.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_cached_baseline_reloads_for_the_same_spec_and_retrains_otherwise(tmp_path):
    path = tmp_path / "pretrained.zip"
    actor, info = load_or_train_ppo_baseline(tiny_spec(oracle=False), path)
    assert info["train_env_steps"] == 32 and path.is_file() and not info["cached"]
    reloaded, info2 = load_or_train_ppo_baseline(tiny_spec(oracle=False), path)
    assert info2 == {**info, "cached": True}
    for (name, a), (name2, b) in zip(
        actor.named_parameters(), reloaded.named_parameters(), strict=True
    ):
        assert name == name2 and torch.equal(a, b)
    gen = torch.Generator().manual_seed(0)
    obs, action = torch.randn(2, 5, 2, generator=gen)
    torch.testing.assert_close(actor(obs).log_prob(action), reloaded(obs).log_prob(action))
    _, info3 = load_or_train_ppo_baseline(tiny_spec(oracle=False, seed=1), path)
    assert info3 != info  # another spec: trained again (its own wall-clock)


def test_oracle_wrapper_refuses_non_box_observations():
    with pytest.raises(TypeError):
        TaskObservationWrapper(gym.make("MetaRL/TabularMDP-v0"))


def test_zoo_settings_for_the_mujoco_bodies_and_the_run_network_elsewhere():
    cheetah = baseline_spec(CHEETAH_DIR, False, 1000, 0, hidden_sizes=(100, 100))
    assert cheetah.normalize and cheetah.n_envs == 1 and cheetah.hidden_sizes == (256, 256)
    assert cheetah.ppo_kwargs["learning_rate"] == 2.0633e-05 and cheetah.log_std_init == -2.0
    assert cheetah.source == "RL Baselines3 Zoo, HalfCheetah" and cheetah.stop_when_flat is None
    ant = baseline_spec("MetaRL/AntVel-v0", True, 1000, 0)
    assert ant.normalize and ant.ppo_kwargs["n_steps"] == 2048 and ant.stop_when_flat
    assert zoo_body("MetaRL/ReacherGoal-v0") == "Reacher"
    nav = baseline_spec(NAV, True, 1000, 0, hidden_sizes=(8,), activation="tanh")
    assert zoo_body(NAV) is None and not nav.normalize and nav.hidden_sizes == (8,)
    assert nav.stop_when_flat == FlatStop(every=100)


@pytest.mark.parametrize(
    ("scores", "flat"),
    [
        ([-90, -60, -40, -30, -20], False),  # fewer chunks than two windows
        ([-90, -60, -40, -30, -20, -10, 0, 10], False),  # still gaining
        ([-90, -20, -19, -18.5, -18.2, -18.1, -18.0, -18.0], True),  # last window: +0.5 of 72
        ([-90, -20, -25, -30, -21, -24, -22], True),  # a plateau, noisy, after one jump
        ([-90, -95, -99, -97, -92, -93], False),  # never rose: train on to the cap
        # a rising curve with one lucky chunk (Meta-World push's oracle, which the best-chunk
        # test stopped at 1.13 M of 2 M while it was still climbing)
        ([0, 10, 20, 30, 40, 50, 60, 150, 70, 80, 85, 90], False),
    ],
)
def test_the_oracle_stops_when_its_learning_curve_is_flat(scores, flat):
    assert FlatStop(every=1).flat(scores) is flat


def test_the_oracle_trains_half_its_cap_before_it_may_stop():
    plateau = [-90, -20, -19, -18.5, -18.2, -18.1, -18.0, -18.0]
    assert FlatStop(every=1).flat(plateau, trained_fraction=1.0)
    assert not FlatStop(every=1).flat(plateau, trained_fraction=0.12)


def test_normalized_baselines_act_on_the_frozen_statistics(tmp_path):
    spec = tiny_spec(oracle=False, normalize=True, total_timesteps=64)
    actor, _ = load_or_train_ppo_baseline(spec, tmp_path / "p.zip")
    model, normalizer, _ = train_ppo_baseline(spec)  # the same seed: the same model
    obs = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    expected = model.policy.get_distribution(torch.as_tensor(normalizer.normalize_obs(obs)))
    got = actor(torch.as_tensor(obs))
    torch.testing.assert_close(got.mean, expected.distribution.mean)
    assert "mean" not in dict(actor.named_parameters())  # statistics never adapt
    # and the evaluation adapts it like any policy (per-task parameters, buffers shared)
    from meta_rl.adaptation import AdvantageEstimator
    from meta_rl.evaluation import adaptation_curve

    sampler = VectorSampler(NAV, 2, 2, seed=0, max_episode_steps=5)
    tasks = sampler.sample_tasks()
    curve = adaptation_curve(
        "pretrained",
        actor,
        sampler,
        tasks,
        [0.1],
        AdvantageEstimator(0.99, 1.0, True),
        sampler.rng_state(),
    )
    assert curve.task_returns[0] != curve.task_returns[1]


def test_baselines_are_cached_per_spec_and_reused(tmp_path):
    spec, other = tiny_spec(oracle=False), tiny_spec(oracle=False, seed=3)
    first, second = (
        cache_path(tmp_path, "pretrained", spec),
        cache_path(tmp_path, "pretrained", other),
    )
    assert first != second and cache_path(tmp_path, "pretrained", tiny_spec(False)) == first
    _, trained = load_or_train_ppo_baseline(spec, first)
    load_or_train_ppo_baseline(other, second)  # does not evict the first
    stamp = first.stat().st_mtime_ns
    _, again = load_or_train_ppo_baseline(spec, first)
    assert again["cached"] and not trained["cached"] and first.stat().st_mtime_ns == stamp


def test_a_small_oracle_run_beats_the_random_policy_on_navigation(tmp_path):
    from meta_rl.evaluation import adaptation_curve, held_out_generators, held_out_tasks

    spec = baseline_spec(NAV, True, 8192, 0, hidden_sizes=(32, 32), activation="tanh")
    oracle, info = load_or_train_ppo_baseline(spec, tmp_path / "oracle.zip")
    assert info["train_env_steps"] <= 8192 + 2048  # capped (one rollout may overshoot)
    plain = VectorSampler(NAV, 5, 4, seed=0)
    sampler = VectorSampler(oracle_env_id(NAV), 5, 4, seed=0)
    tasks = held_out_tasks(plain, 5, 1)
    state = held_out_generators(1)[1].bit_generator.state
    random_policy = make_policy(plain.observation_space, plain.action_space, (32, 32), "tanh")
    random_policy.reset_parameters(torch.Generator().manual_seed(0))
    returns = {}
    for name, policy, s in (("random", random_policy, plain), ("oracle", oracle, sampler)):
        curve = adaptation_curve(name, policy, s, tasks, [], None, state)
        returns[name] = curve.mean_ci()[0][0]
    # measured at seed 0: -159.9 (random) and -60.1 (oracle after 8 k PPO steps, at its cap)
    assert returns["oracle"] > returns["random"] + 50, returns
