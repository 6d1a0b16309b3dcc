"""The batched sampler: shapes, masks, per-task parameters and one policy call per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from meta_rl.algorithms import closed_form
from meta_rl.functional import (
    expand_to_tasks,
    flatten_distribution,
    policy_params,
)
from meta_rl.samplers import VectorSampler


class CountingPolicy(nn.Module):
    """Wraps a policy and counts forward calls (vmap runs forward once per batched call)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, obs: torch.Tensor):
        self.calls += 1
        return self.inner(obs)


def shared(policy: nn.Module, num_tasks: int):
    return expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, num_tasks)


def nav_sampler(num_tasks=2, episodes=3, seed=0, **kwargs) -> VectorSampler:
    return VectorSampler("MetaRL/Navigation2D-v0", num_tasks, episodes, seed=seed, **kwargs)


def test_shapes_masks_and_one_policy_call_per_step():
    sampler = nav_sampler(max_episode_steps=15)
    policy = CountingPolicy(GaussianMLPPolicy(2, 2, hidden_sizes=(8,)))
    tasks = [{"goal": [0.3, 0.3]}, {"goal": [-0.2, 0.1]}]
    episodes = sampler.sample(policy, shared(policy, 2), tasks)
    assert episodes.observations.shape == (16, 2, 3, 2)
    assert episodes.actions.shape == (15, 2, 3, 2)
    for name in ("rewards", "mask", "terminated", "truncated", "log_probs"):
        assert getattr(episodes, name).shape == (15, 2, 3)
    # no episode reaches its goal with a random policy this quickly: all truncated at step 15
    assert torch.all(episodes.mask == 1.0)
    assert torch.all(episodes.truncated[-1]) and not episodes.truncated[:-1].any()
    assert policy.calls == 15
    assert np.all(episodes.observations[0].numpy() == 0.0)  # Navigation2D starts at the origin


def test_rewards_match_the_environment_dynamics_and_tasks():
    sampler = nav_sampler(num_tasks=2, episodes=2, max_episode_steps=10)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    tasks = [{"goal": [0.4, -0.4]}, {"goal": [-0.1, 0.2]}]
    ep = sampler.sample(policy, shared(policy, 2), tasks)
    obs = ep.observations.double()
    # position moves by the clipped action; reward = -distance of the new position to the goal
    moved = obs[:-1] + ep.actions.double().clamp(-0.1, 0.1)
    torch.testing.assert_close(obs[1:], moved, atol=1e-6, rtol=0)
    goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float64)[None, :, None, :]
    expected = -torch.linalg.vector_norm(obs[1:] - goals, dim=-1)
    torch.testing.assert_close(ep.rewards.double(), expected, atol=1e-5, rtol=0)


def test_variable_lengths_are_masked_and_terminal_observation_kept():
    sampler = nav_sampler(num_tasks=2, episodes=1, max_episode_steps=30)

    class Toward(nn.Module):  # deterministic-ish: mean 0.1 along +x, tiny noise
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.1, 0.0]))

        def forward(self, obs):
            mean = self.bias.expand(*obs.shape[:-1], 2)
            return torch.distributions.Independent(
                torch.distributions.Normal(mean, torch.full_like(mean, 1e-6), validate_args=False),
                1,
                validate_args=False,
            )

    policy = Toward()
    # task 0: goal reachable in 3 steps; task 1: never reached
    ep = sampler.sample(policy, shared(policy, 2), [{"goal": [0.3, 0.0]}, {"goal": [-0.4, 0.4]}])
    assert ep.lengths[0, 0].item() == 3 and ep.terminated[2, 0, 0]
    assert ep.lengths[1, 0].item() == 30 and ep.truncated[29, 1, 0]
    assert ep.mask[3:, 0, 0].sum() == 0
    torch.testing.assert_close(
        ep.observations[3, 0, 0], torch.tensor([0.3, 0.0]), atol=1e-4, rtol=0
    )
    assert ep.rewards[3:, 0, 0].abs().sum() == 0


def test_each_task_is_acted_on_with_its_own_parameters():
    sampler = nav_sampler(num_tasks=2, episodes=4, max_episode_steps=5)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), init_std=1e-4)
    params = {k: v.detach().clone() for k, v in shared(policy, 2).items()}
    # make the two tasks' policies push in opposite directions
    bias_name = next(k for k in params if k.endswith("bias") and params[k].shape[-1] == 2)
    params[bias_name][0] = torch.tensor([5.0, 5.0])
    params[bias_name][1] = torch.tensor([-5.0, -5.0])
    ep = sampler.sample(policy, params, [{"goal": [0.0, 0.4]}] * 2)
    assert torch.all(ep.actions[:, 0] > 1.0) and torch.all(ep.actions[:, 1] < -1.0)
    # the logged log-probabilities are those of each task's own distribution
    own = policy(ep.observations[0, 0])  # task 0 is not the module's own parameters
    assert not torch.allclose(own.log_prob(ep.actions[0, 0]), ep.log_probs[0, 0])


def test_same_seed_same_episodes_and_different_seed_differs():
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    tasks = [{"goal": [0.1, 0.1]}, {"goal": [0.2, -0.3]}]
    runs = []
    for seed in (3, 3, 4):
        sampler = nav_sampler(seed=seed, max_episode_steps=10)
        runs.append(sampler.sample(policy, shared(policy, 2), tasks))
    assert torch.equal(runs[0].actions, runs[1].actions)
    assert torch.equal(runs[0].rewards, runs[1].rewards)
    assert not torch.equal(runs[0].actions, runs[2].actions)


def test_sampling_does_not_touch_the_global_torch_rng():
    sampler = nav_sampler(max_episode_steps=5)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sampler.sample(policy, shared(policy, 2), sampler.sample_tasks())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("env_id", ["MetaRL/Bandit-K5-v0", "MetaRL/TabularMDP-v0"])
def test_discrete_families_are_one_hot_encoded(env_id):
    sampler = VectorSampler(env_id, 3, 2, seed=0)
    policy = CategoricalMLPPolicy(sampler.obs_dim, int(sampler.action_space.n), hidden_sizes=(8,))
    ep = sampler.sample(policy, shared(policy, 3), sampler.sample_tasks())
    valid = ep.observations[:-1][ep.mask.bool()]
    assert torch.all(valid.sum(-1) == 1.0) and set(valid.unique().tolist()) <= {0.0, 1.0}
    assert ep.actions.dtype == torch.int64 and ep.actions.shape == (10, 3, 2)
    assert int(ep.actions.max()) < sampler.action_space.n


def test_wrong_number_of_tasks_is_an_error():
    sampler = nav_sampler(max_episode_steps=5)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="2 tasks"):
        sampler.sample(policy, shared(policy, 3), [{"goal": [0.0, 0.0]}] * 3)


@pytest.mark.parametrize("policy_cls", [GaussianMLPPolicy, CategoricalMLPPolicy])
def test_shared_parameters_run_as_one_plain_call_with_the_same_distribution(policy_cls):
    """Sampling the pre-adaptation batch skips vmap: one call on [tasks * rows, dim] inputs.

    Per-task parameters go through vmap (one call), except for a plain Gaussian MLP, whose
    tasks run as batched matrix products without calling the module: that is the forward
    ``algorithms.closed_form.task_forward`` the builders hand the samplers.
    """
    gen = torch.Generator().manual_seed(3)
    policy = policy_cls(4, 3, hidden_sizes=(8,), generator=gen).double()
    seen: list[torch.Size] = []
    policy.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    obs = torch.randn(5, 3, 6, 4, generator=gen, dtype=torch.float64)  # [T, tasks, rows, dim]
    same = shared(policy, 3)
    distinct = {
        k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in same.items()
    }
    other = expand_to_tasks({k: v[1] for k, v in distinct.items()}, 3)  # shared, not the module's
    for params, one_call in ((same, True), (other, True), (distinct, False)):
        seen.clear()
        with torch.no_grad():
            dist = closed_form.task_forward(policy, params, obs, task_dim=1)
        if one_call or policy_cls is not GaussianMLPPolicy:
            assert len(seen) == 1 and (seen[0] == (3 * 5, 6, 4)) is one_call
        else:
            assert not seen
        assert dist.batch_shape == (5, 3, 6)
        for task in range(3):
            own = {k: v[task] for k, v in params.items()}
            expected = functional_call(policy, own, (obs[:, task],))
            got_leaves, want_leaves = (
                flatten_distribution(dist)[0],
                flatten_distribution(expected)[0],
            )
            for got, want in zip(got_leaves, want_leaves, strict=True):
                torch.testing.assert_close(got[:, task], want.expand_as(got[:, task]))


@pytest.mark.parametrize("backend", ["vector", "torch"])
def test_the_sampler_runs_the_policy_through_the_forward_it_was_handed(backend):
    """``task_forward`` is the samplers' one way to run a non-recurrent policy; the builders
    hand them the closed form's batched forward, which gives the generic path's episodes."""
    from meta_rl.samplers.torch_native import TorchSampler

    calls: list[int] = []

    def recording(policy, params, obs, task_dim):
        calls.append(task_dim)
        return closed_form.task_forward(policy, params, obs, task_dim)

    cls = VectorSampler if backend == "vector" else TorchSampler
    kwargs = {"seed": 4, "max_episode_steps": 6}
    generic = cls("MetaRL/Navigation2D-v0", 3, 2, **kwargs)
    fast = cls("MetaRL/Navigation2D-v0", 3, 2, task_forward=recording, **kwargs)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,), generator=torch.Generator().manual_seed(1))
    params = {
        k: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2))
        for k, v in shared(policy, 3).items()
    }
    tasks = generic.sample_tasks()
    fast.sample_tasks()  # the same generator state
    want, got = generic.sample(policy, params, tasks), fast.sample(policy, params, tasks)
    assert calls and set(calls) == {0}
    for name in ("observations", "actions", "log_probs", "rewards", "mask"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name))


def test_builders_hand_the_samplers_the_closed_form_forward():
    from meta_rl.builders import build_sampler
    from meta_rl.config import config_from_dict

    config = config_from_dict(
        {"env": {"id": "MetaRL/Navigation2D-v0", "max_episode_steps": 4}},
        ["train.meta_batch_size=2", "train.episodes_per_task=1"],
    )
    sampler = build_sampler(config, torch.device("cpu"))
    assert sampler.task_forward is closed_form.task_forward
    sampler.close()
