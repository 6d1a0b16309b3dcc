"""meta_rl.algorithms.closed_form: closed-form MLP derivatives give autograd's numbers, and
MAML-TRPO uses them only where they apply."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_rl.adaptation import adapt
from meta_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from meta_rl.algorithms import closed_form
from meta_rl.algorithms.adapted import AutogradAdaptation, InnerLoop
from meta_rl.algorithms.maml_trpo import MAMLTRPO, MAMLTRPOSettings
from meta_rl.algorithms.trpo import flat
from meta_rl.episodes import InnerBatch
from meta_rl.functional import policy_params

from fakes import random_episodes

T, N, E, OBS, ACT = 5, 3, 4, 3, 2
ENDS = [(3, 0, 1), (1, 2, 3)]  # two episodes end early: padded steps must not count


def make_policy(activation: str, hidden: tuple[int, ...] = (5, 4)) -> GaussianMLPPolicy:
    gen = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(
        OBS, ACT, hidden, activation, init_std=0.8, min_std=0.5, generator=gen
    ).double()
    with torch.no_grad():
        for p in policy.mean_net.parameters():  # nonzero biases: every term of the Hessian
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
        policy.log_std.copy_(torch.tensor([math.log(0.8), math.log(0.3)]))  # 2nd is clamped
    return policy


def make_batches(steps: int, seed: int = 1) -> tuple[list[InnerBatch], object, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inner = [
        InnerBatch(
            random_episodes(gen, (T, N, E), OBS, ACT, ENDS),
            torch.randn(T, N, E, generator=gen, dtype=torch.float64),
        )
        for _ in range(steps)
    ]
    valid = random_episodes(gen, (T, N, E), OBS, ACT, ENDS)
    return inner, valid, torch.randn(T, N, E, generator=gen, dtype=torch.float64)


def both(policy, settings, inner, obs, final=None):
    """The closed-form and the autograd adapted policies, from the strategies MAMLTRPO picks."""
    fast = MAMLTRPO(policy, settings).adaptation
    slow = MAMLTRPO(policy, MAMLTRPOSettings(**{**vars(settings), "analytic": False})).adaptation
    assert isinstance(fast, closed_form.ClosedFormAdaptation)
    assert isinstance(slow, AutogradAdaptation)
    theta = policy_params(policy)
    return fast.linearize(theta, inner, obs, final), slow.linearize(theta, inner, obs, final)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_jacobian_products_equal_autograd(activation, steps, first_order):
    policy = make_policy(activation)
    inner, valid, _ = make_batches(steps)
    settings = MAMLTRPOSettings(inner_lr=0.3, first_order=first_order)
    fast, slow = both(policy, settings, inner, valid.observations[:-1])
    for a, b in zip(fast.leaves, slow.leaves, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
    for name in slow.params:
        torch.testing.assert_close(fast.params[name], slow.params[name], rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(flat(list(policy.parameters())).numel(), generator=gen, dtype=torch.float64)
    for a, b in zip(fast.jacobian.jvp(v), slow.jacobian.jvp(v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    u = [torch.randn(leaf.shape, generator=gen, dtype=torch.float64) for leaf in slow.leaves]
    torch.testing.assert_close(fast.jacobian.vjp(u), slow.jacobian.vjp(u), rtol=1e-10, atol=1e-12)


def test_linear_policy_without_hidden_layers_equals_autograd():
    policy = make_policy("tanh", hidden=())
    inner, valid, _ = make_batches(2)
    fast, slow = both(policy, MAMLTRPOSettings(inner_lr=0.3), inner, valid.observations[:-1])
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(flat(list(policy.parameters())).numel(), generator=gen, dtype=torch.float64)
    for a, b in zip(fast.jacobian.jvp(v), slow.jacobian.jvp(v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    u = [torch.randn(leaf.shape, generator=gen, dtype=torch.float64) for leaf in slow.leaves]
    torch.testing.assert_close(fast.jacobian.vjp(u), slow.jacobian.vjp(u), rtol=1e-10, atol=1e-12)


def test_jacobian_with_replaced_final_point_equals_autograd():
    """The subsampled Fisher's shape: Jacobian of one adaptation, value of another."""
    policy = make_policy("tanh")
    inner, valid, _ = make_batches(2)
    final = {
        k: v.detach() + 0.05
        for k, v in both(policy, MAMLTRPOSettings(inner_lr=0.3), inner, valid.observations[:-1])[
            1
        ].params.items()
    }
    fast, slow = both(policy, MAMLTRPOSettings(inner_lr=0.3), inner, valid.observations[:-1], final)
    torch.testing.assert_close(fast.leaves[0], slow.leaves[0].detach(), rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(flat(list(policy.parameters())).numel(), generator=gen, dtype=torch.float64)
    for a, b in zip(fast.jacobian.jvp(v), slow.jacobian.jvp(v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_no_inner_step_is_the_policy_itself():
    policy = make_policy("tanh", hidden=(6,))
    _, valid, _ = make_batches(0)
    fast, slow = both(policy, MAMLTRPOSettings(), [], valid.observations[:-1])
    torch.testing.assert_close(fast.leaves[1], slow.leaves[1].detach())
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(flat(list(policy.parameters())).numel(), generator=gen, dtype=torch.float64)
    for a, b in zip(fast.jacobian.jvp(v), slow.jacobian.jvp(v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("steps", "subsample"), [(1, 1.0), (1, 0.5), (2, 0.5), (0, 1.0)])
def test_trpo_step_is_the_same_with_either_derivatives(steps, subsample):
    """Zero inner steps (plain multi-task TRPO) included: it used to fail on ``inner[0]``."""
    policy = make_policy("tanh")
    inner, valid, advantages = make_batches(steps)
    results = []
    for use_closed_form in (True, False):
        module = copy.deepcopy(policy)
        settings = MAMLTRPOSettings(
            inner_lr=0.3,
            cg_damping=0.1,
            task_chunk=2,
            fisher_subsample=subsample,
            analytic=use_closed_form,
        )
        stats = MAMLTRPO(module, settings).step(inner, valid, advantages)
        results.append((stats, flat([p.detach() for p in module.parameters()])))
    (fast, theta_fast), (slow, theta_slow) = results
    assert fast.accepted and slow.accepted
    assert fast.line_search_steps == slow.line_search_steps
    for key in ("surrogate_before", "surrogate_after", "kl", "grad_norm", "cg_residual"):
        assert getattr(fast, key) == pytest.approx(getattr(slow, key), rel=1e-8)
    torch.testing.assert_close(theta_fast, theta_slow, rtol=1e-8, atol=1e-11)


def test_supports_only_plain_gaussian_mlps_with_known_activations():
    assert closed_form.supports(make_policy("tanh"))
    assert closed_form.supports(make_policy("relu", hidden=(7,)))
    assert not closed_form.supports(make_policy("elu"))  # no closed form written: autograd
    assert not closed_form.supports(CategoricalMLPPolicy(OBS, 3))

    class Squashed(GaussianMLPPolicy):  # a subclass may change forward()
        pass

    assert not closed_form.supports(Squashed(OBS, ACT))
    frozen = make_policy("tanh")
    frozen.log_std.requires_grad_(False)
    assert not closed_form.supports(frozen)
    assert isinstance(
        MAMLTRPO(make_policy("tanh"), MAMLTRPOSettings(fvp="double_backward")).adaptation,
        AutogradAdaptation,
    )
    assert not isinstance(make_policy("tanh").mean_net[-1], nn.ReLU)


def per_task(policy: GaussianMLPPolicy, seed: int = 7) -> dict[str, torch.Tensor]:
    """Distinct parameters per task, around the policy's own."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + 0.1 * torch.randn(N, *v.shape, generator=gen, dtype=v.dtype)
        for k, v in policy_params(policy).items()
    }


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_inner_step_equals_adapt(activation):
    policy = make_policy(activation)
    inner, _, _ = make_batches(1)
    params = {k: v.requires_grad_(True) for k, v in per_task(policy).items()}
    want = adapt(policy, params, inner[0], lr=0.3, create_graph=False)
    got = closed_form.inner_step(policy, params, inner[0], lr=0.3)
    assert list(got) == list(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("task_dim", [0, 1])
def test_task_distribution_equals_vmapped_functional_call(task_dim):
    policy = make_policy("tanh")
    params = per_task(policy)
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(T, N, E, OBS, generator=gen, dtype=torch.float64).movedim(1, task_dim)
    with torch.no_grad():
        got = closed_form.task_distribution(policy, params, obs, task_dim)
    for task in range(N):
        own = {k: v[task] for k, v in params.items()}
        want = functional_call(policy, own, (obs.select(task_dim, task),))
        torch.testing.assert_close(got.mean.select(task_dim, task), want.mean)
        torch.testing.assert_close(got.stddev.select(task_dim, task), want.stddev)


class _ExpLoss:
    """A DiCE-like inner loss, not linear in the log-probs: the closed form would be wrong."""

    linear_in_log_probs = False

    def __call__(self, log_probs, batch):
        mask = batch.episodes.mask
        return -(torch.exp(log_probs) * batch.advantages * mask).sum((0, 2)) / mask.sum((0, 2))


def test_closed_form_refuses_an_inner_loss_that_is_not_linear_in_the_log_probs():
    policy = make_policy("tanh")
    with pytest.raises(ValueError, match=r"linear in the log-probs.*_ExpLoss"):
        closed_form.ClosedFormAdaptation(InnerLoop(policy, 0.3, loss=_ExpLoss()))
    with pytest.raises(ValueError, match="plain GaussianMLPPolicy"):
        closed_form.ClosedFormAdaptation(InnerLoop(CategoricalMLPPolicy(OBS, 3), 0.3))


def test_maml_falls_back_to_autograd_for_such_a_loss_and_differentiates_it(caplog):
    """The fallback is real: the autograd strategy adapts with the loss it was given."""
    policy = make_policy("tanh")
    inner, _, _ = make_batches(1)
    with caplog.at_level(logging.WARNING):
        maml = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.3), inner_loss=_ExpLoss())
    assert "_ExpLoss is not linear in the log-probs" in caplog.text
    assert isinstance(maml.adaptation, AutogradAdaptation)
    params = {k: v.unsqueeze(0).expand(N, *v.shape) for k, v in policy_params(policy).items()}
    got = maml.inner_step(params, inner[0])
    # reference: the gradient of the exp loss task by task, by plain autograd
    for task in range(N):
        own = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
        episodes = inner[0].episodes
        dist = functional_call(policy, own, (episodes.observations[:-1, task],))
        log_probs = dist.log_prob(episodes.actions[:, task])
        mask = episodes.mask[:, task]
        loss = -(torch.exp(log_probs) * inner[0].advantages[:, task] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(own.values()))
        for (name, value), grad in zip(own.items(), grads, strict=True):
            torch.testing.assert_close(got[name][task], value - 0.3 * grad)
