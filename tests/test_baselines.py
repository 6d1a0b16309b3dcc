"""Comparison baselines: the oracle (and only the oracle) sees the task; PPO training, caching."""

from __future__ import annotations

import dataclasses
import random

import gymnasium as gym
import numpy as np
import pytest
import torch

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.agents.pretrained import (
    PPOBaselineSpec,
    RandomTaskWrapper,
    TaskObservationWrapper,
    load_or_train_ppo_baseline,
    oracle_env_id,
    task_vector,
    train_ppo_baseline,
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
    pretrained = train_ppo_baseline(tiny_spec(oracle=False))
    oracle = train_ppo_baseline(tiny_spec(oracle=True))
    assert pretrained.observation_space.shape == (2,)
    assert oracle.observation_space.shape == (4,)
    assert pretrained.num_timesteps == oracle.num_timesteps == 32
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state
    assert torch.equal(torch.get_rng_state(), torch_state)
    # same spec, same seed -> the same weights
    again = train_ppo_baseline(tiny_spec(oracle=False))
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
