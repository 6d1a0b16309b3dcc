"""Torch-native task families: same dynamics and rewards as the Gymnasium envs, same batches."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding
from torch import nn
from torch.distributions import Categorical

from meta_rl.agents.policies import make_policy
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers.torch_native import (
    BatchedBandit,
    BatchedTabularMDP,
    TorchSampler,
    batched_env,
)


def _shared_params(policy: nn.Module, num_tasks: int):
    return expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, num_tasks)


def _assert_same_episodes(a, b):
    assert a.tensors().keys() == b.tensors().keys()
    for name, x in a.tensors().items():
        y = getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x, y), name


@pytest.mark.parametrize("push", [0.0, 5.0])
def test_navigation_torch_sampler_reproduces_vector_sampler(push):
    """Same seed -> bitwise the same episodes; ``push`` drives half the tasks into their goal."""
    kwargs = {"num_tasks": 4, "episodes_per_task": 3, "seed": 7, "max_episode_steps": 6}
    vector = VectorSampler("MetaRL/Navigation2D-v0", **kwargs)
    native = TorchSampler("MetaRL/Navigation2D-v0", **kwargs)
    policy = make_policy(vector.observation_space, vector.action_space, (8,), "tanh")
    policy.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        policy.mean_net[-1].bias.fill_(push)  # mean >> 0.1: every action clips to (0.1, 0.1)
    tasks = vector.sample_tasks()
    assert native.sample_tasks() == tasks
    if push:  # 0.1 + 0.1 + 0.1 lands within 0.01 of 0.3: terminates at step 3
        tasks[0]["goal"] = tasks[2]["goal"] = [0.3, 0.3]
    for _ in range(2):  # the second call checks the generators stay in step
        params = _shared_params(policy, 4)
        a, b = vector.sample(policy, params, tasks), native.sample(policy, params, tasks)
        _assert_same_episodes(a, b)
    if push:
        assert b.terminated[2, 0].all() and b.mask[3:, 0].sum() == 0
        assert b.truncated[-1, 1].all() and not b.terminated[:, 1].any()
    # stepped in inference mode, returned as ordinary tensors that losses can differentiate
    assert not any(tensor.is_inference() for tensor in b.tensors().values())


def test_bandit_step_matches_gym_with_the_same_random_numbers():
    env = gym.make("MetaRL/Bandit-K5-v0")
    tasks = env.unwrapped.sample_tasks(6, np.random.default_rng(0))
    twin = batched_env(env, torch.device("cpu"))
    assert isinstance(twin, BatchedBandit)
    twin.set_tasks(tasks)
    gyms = [gym.make("MetaRL/Bandit-K5-v0") for _ in tasks]
    streams = [seeding.np_random(100 + i)[0] for i in range(len(tasks))]
    for i, (e, task) in enumerate(zip(gyms, tasks, strict=True)):
        e.reset(seed=100 + i, options={"task": task})
    actions = np.random.default_rng(1).integers(5, size=(20, len(tasks)))
    for step_actions in actions:
        expected = [e.step(int(a))[1] for e, a in zip(gyms, step_actions, strict=True)]
        uniform = torch.tensor([s.random() for s in streams], dtype=torch.float64)
        obs, reward, term = twin.transition(torch.as_tensor(step_actions), uniform)
        assert reward.tolist() == expected
        assert obs.tolist() == [[1.0]] * len(tasks) and not term.any()


def test_tabular_mdp_step_matches_gym_with_the_same_random_numbers():
    env = gym.make("MetaRL/TabularMDP-v0")
    tasks = env.unwrapped.sample_tasks(5, np.random.default_rng(0))
    twin = batched_env(env, torch.device("cpu"))
    assert isinstance(twin, BatchedTabularMDP)
    twin.set_tasks(tasks)
    twin.reset(torch.Generator())
    gyms = [gym.make("MetaRL/TabularMDP-v0") for _ in tasks]
    streams = [seeding.np_random(50 + i)[0] for i in range(len(tasks))]
    for i, (e, task) in enumerate(zip(gyms, tasks, strict=True)):
        e.reset(seed=50 + i, options={"task": task})
    actions = np.random.default_rng(1).integers(5, size=(30, len(tasks)))
    for step_actions in actions:
        results = [e.step(int(a)) for e, a in zip(gyms, step_actions, strict=True)]
        normal = torch.tensor([s.standard_normal() for s in streams], dtype=torch.float64)
        uniform = torch.tensor([s.random() for s in streams], dtype=torch.float64)
        obs, reward, _ = twin.transition(torch.as_tensor(step_actions), normal, uniform)
        states = [r[0] for r in results]
        assert obs.argmax(dim=1).tolist() == states and obs.sum().item() == len(tasks)
        expected = torch.tensor([r[1] for r in results], dtype=torch.float32)
        torch.testing.assert_close(reward, expected, rtol=0, atol=0)


class _FixedArm(nn.Module):
    """Categorical policy that always pulls arm ``arm`` (a constant logit)."""

    def __init__(self, arm: int, k: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((k,), -1e4).index_fill(0, torch.tensor(arm), 0.0))

    def forward(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits.expand(*obs.shape[:-1], -1), validate_args=False)


def test_bandit_torch_sampler_rewards_have_the_task_means():
    sampler = TorchSampler("MetaRL/Bandit-K5-v0", num_tasks=3, episodes_per_task=400, seed=0)
    tasks = sampler.sample_tasks()
    policy = _FixedArm(arm=2, k=5)
    episodes = sampler.sample(policy, _shared_params(policy, 3), tasks)
    assert episodes.observations.shape == (11, 3, 400, 1) and episodes.mask.all()
    assert (episodes.actions == 2).all() and episodes.truncated[-1].all()
    rate = episodes.rewards.mean(dim=(0, 2)).double()
    means = torch.tensor([t["means"][2] for t in tasks], dtype=torch.float64)
    n = 10 * 400
    assert ((rate - means).abs() <= 4 * (means * (1 - means) / n).sqrt() + 1e-9).all()


def test_families_without_a_torch_version_are_refused_by_name():
    with pytest.raises(ValueError, match=r"HalfCheetahVelEnv.*Navigation2DEnv"):
        TorchSampler("MetaRL/HalfCheetahVel-v0", num_tasks=1, episodes_per_task=1, seed=0)


def test_import_envs_stays_torch_free():
    code = "import sys, meta_rl.envs; assert 'torch' not in sys.modules, 'envs imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
