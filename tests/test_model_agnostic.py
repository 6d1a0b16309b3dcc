"""MAML-TRPO and Reptile run unchanged with every policy kind; the GRU's meta-gradient is exact."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import pytest
import torch
from torch import nn
from torch.func import functional_call

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.adaptation import AdvantageEstimator, InnerBatch, adapt
from meta_rl.agents.policies import make_policy
from meta_rl.agents.recurrent import GRUPolicy
from meta_rl.agents.sb3 import SB3Actor, make_sb3_policy
from meta_rl.algorithms.maml_trpo import MAMLTRPO, MAMLTRPOLearner, MAMLTRPOSettings
from meta_rl.algorithms.reptile import ReptileLearner, ReptileSettings
from meta_rl.algorithms.trpo import flat, unflat
from meta_rl.episodes import Episodes
from meta_rl.functional import expand_to_tasks, policy_params, task_log_probs
from meta_rl.samplers import VectorSampler, observation_dim

from fakes import random_episodes

NAV, BANDIT, MDP = "MetaRL/Navigation2D-v0", "MetaRL/Bandit-K5-v0", "MetaRL/TabularMDP-v0"


def _dims(env: gym.Env) -> tuple[int, int, bool]:
    space = env.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    act = int(space.n) if discrete else int(space.shape[0])
    return observation_dim(env.observation_space), act, discrete


def _gru(env: gym.Env, gen: torch.Generator) -> nn.Module:
    obs, act, discrete = _dims(env)
    return GRUPolicy(obs, act, (8, 8), discrete=discrete, generator=gen)


def _sb3(env: gym.Env, gen: torch.Generator) -> nn.Module:
    return SB3Actor(
        make_sb3_policy(env.observation_space, env.action_space, (8, 8), "tanh", 1.0, gen)
    )


def _mlp(env: gym.Env, gen: torch.Generator) -> nn.Module:
    return make_policy(env.observation_space, env.action_space, (8, 8), "tanh", generator=gen)


KINDS: dict[str, tuple[str, Callable[[gym.Env, torch.Generator], nn.Module]]] = {
    "gaussian_mlp": (NAV, _mlp),
    "gru": (NAV, _gru),
    "sb3_actor": (NAV, _sb3),
    "categorical_bandit": (BANDIT, _mlp),
    "categorical_tabular_mdp": (MDP, _mlp),
    "gru_bandit": (BANDIT, _gru),
}


def build(kind: str) -> tuple[nn.Module, VectorSampler]:
    env_id, make = KINDS[kind]
    sampler = VectorSampler(env_id, 2, 3, seed=0, max_episode_steps=8)
    return make(sampler.envs[0], torch.Generator().manual_seed(0)), sampler


@pytest.mark.parametrize("kind", KINDS)
def test_reptile_runs_unchanged_and_its_update_is_the_formula(kind):
    policy, sampler = build(kind)
    settings = ReptileSettings(
        inner_lr=0.05,
        inner_optimizer="adam",
        outer_lr=0.5,
        outer_anneal_iterations=500,
        num_inner_steps=2,
    )
    learner = ReptileLearner(policy, sampler, AdvantageEstimator(), settings)
    for _ in range(2):
        theta = {k: v.detach().clone() for k, v in policy_params(policy).items()}
        rollouts = learner.collect(sampler.sample_tasks())
        metrics = learner.update(rollouts)
        eps = metrics["reptile/epsilon"]
        for name, value in policy_params(policy).items():
            mean_step = (rollouts.adapted[name] - theta[name]).mean(dim=0)
            torch.testing.assert_close(value, theta[name] + eps * mean_step)
        assert len(rollouts.returns) == 3
        # the batch after the last step was sampled by the adapted policies: its stored
        # log-probabilities are theirs, recomputed here on whole sequences
        post = rollouts.batches[-1]
        obs = post.observations[:-1]
        log_probs = task_log_probs(policy, rollouts.adapted, obs, post.actions, task_dim=1)
        valid = post.mask > 0
        torch.testing.assert_close(log_probs[valid], post.log_probs[valid], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_maml_trpo_runs_unchanged_within_its_trust_region(kind):
    policy, sampler = build(kind)
    settings = MAMLTRPOSettings(inner_lr=0.1, max_kl=0.01, cg_iters=3, ls_max_steps=5)
    learner = MAMLTRPOLearner(policy, sampler, AdvantageEstimator(), settings)
    accepted = 0
    for _ in range(2):
        theta = {k: v.detach().clone() for k, v in policy_params(policy).items()}
        report = learner.iteration(sampler.sample_tasks())
        moved = any(not torch.equal(v, theta[k]) for k, v in policy_params(policy).items())
        assert moved == bool(report.metrics["trpo/accepted"])
        if moved:  # an accepted step: inside the KL bound and better on the surrogate
            accepted += 1
            assert 0.0 < report.metrics["trpo/kl"] <= settings.max_kl
            assert report.metrics["meta/surrogate_after"] < report.metrics["meta/surrogate_before"]
    assert accepted >= 1, "no step was accepted: the trust-region checks above never ran"


# --- the meta-gradient through a recurrent policy, against finite differences ---------------

T, N, E, OBS, ACT = 5, 2, 3, 3, 2


def _episodes(gen: torch.Generator) -> Episodes:
    # a short episode (task 0, episode 1): steps after its end must not matter
    return random_episodes(gen, (T, N, E), OBS, ACT, ends=[(3, 0, 1)])


@pytest.mark.parametrize("kind", ["gaussian_mlp", "gru"])
def test_meta_gradient_matches_finite_differences(kind):
    gen = torch.Generator().manual_seed(0)
    if kind == "gru":
        policy = GRUPolicy(OBS, ACT, (4,), init_std=0.7, generator=gen).double()
    else:
        space = gym.spaces.Box(-1.0, 1.0, (OBS,))
        policy = make_policy(space, gym.spaces.Box(-1.0, 1.0, (ACT,)), (4,), "tanh", 0.7, gen)
        policy = policy.double()
    inner = [InnerBatch(_episodes(gen), torch.randn(T, N, E, generator=gen).double())]
    valid, advantages = _episodes(gen), torch.randn(T, N, E, generator=gen).double()
    maml = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.5))
    theta = policy_params(policy)
    adapted = adapt(policy, expand_to_tasks(theta, N), inner[0], 0.5, create_graph=False)
    with torch.no_grad():
        old = task_log_probs(policy, adapted, valid.observations[:-1], valid.actions, 1) - 0.05
    loss = maml.meta_loss(theta, inner, valid, advantages, old)
    analytic = flat(torch.autograd.grad(loss, list(theta.values())))

    names, leaves = list(theta), [v.detach() for v in theta.values()]
    base, numeric, h = flat(leaves), torch.zeros_like(analytic), 1e-6
    for i in range(base.numel()):
        values = []
        for sign in (1.0, -1.0):
            vec = base.clone()
            vec[i] += sign * h
            params = {
                n: p.requires_grad_(True) for n, p in zip(names, unflat(vec, leaves), strict=True)
            }
            values.append(maml.meta_loss(params, inner, valid, advantages, old).item())
        numeric[i] = (values[0] - values[1]) / (2 * h)
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-7)


def test_gru_sequence_equals_torch_gru_and_stepwise_evaluation():
    gen = torch.Generator().manual_seed(0)
    policy = GRUPolicy(OBS, ACT, (4,), generator=gen).double()
    reference = nn.GRU(OBS, 4).double()
    with torch.no_grad():
        reference.weight_ih_l0.copy_(policy.input_gates.weight)
        reference.bias_ih_l0.copy_(policy.input_gates.bias)
        reference.weight_hh_l0.copy_(policy.hidden_gates.weight)
        reference.bias_hh_l0.copy_(policy.hidden_gates.bias)
    obs = torch.randn(T, E, OBS, generator=gen, dtype=torch.float64)
    state0 = policy.initial_state((E,))
    dist, final = policy(obs, state0)
    hidden, last = reference(obs, state0.unsqueeze(0))
    torch.testing.assert_close(dist.mean, policy.head(hidden))
    torch.testing.assert_close(final, last.squeeze(0))
    state, means = state0, []
    params = dict(policy.named_parameters())
    for t in range(T):  # one step at a time, as the sampler calls it
        step_dist, state = functional_call(policy, params, (obs[t : t + 1], state))
        means.append(step_dist.mean[0])
    torch.testing.assert_close(torch.stack(means), dist.mean)
