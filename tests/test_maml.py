"""MAML-TRPO numerics: meta-gradient, Fisher products, CG and the TRPO step, checked by numbers."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from meta_rl.adaptation import InnerBatch, adapt
from meta_rl.algorithms.maml_trpo import (
    MAMLTRPO,
    FisherOperator,
    MAMLTRPOSettings,
    task_masked_mean,
)
from meta_rl.algorithms.trpo import conjugate_gradient, double_backward_fvp, flat, unflat
from meta_rl.episodes import Episodes
from meta_rl.functional import (
    expand_to_tasks,
    policy_params,
    task_kl,
    task_log_probs,
)

from fakes import TinyGaussian, random_episodes

T, N, E, OBS, ACT = 6, 3, 4, 3, 2


def make_episodes(gen: torch.Generator) -> Episodes:
    return random_episodes(gen, (T, N, E), OBS, ACT, ends=[(4, 0, 1), (2, 2, 3)])


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    policy = TinyGaussian(OBS, ACT, seed=0).double()
    inner = [InnerBatch(make_episodes(gen), torch.randn(T, N, E, generator=gen).double())]
    valid = make_episodes(gen)
    advantages = torch.randn(T, N, E, generator=gen, dtype=torch.float64)
    return policy, inner, valid, advantages


def meta_objective(maml, theta, inner, valid, advantages, old_log_probs):
    return maml.meta_loss(theta, inner, valid, advantages, old_log_probs)


def finite_difference_grad(fn, theta, eps=1e-6):
    names = list(theta)
    base = flat([theta[n].detach() for n in names])
    grad = torch.zeros_like(base)
    for i in range(base.numel()):
        shifted = []
        for sign in (1.0, -1.0):
            vec = base.clone()
            vec[i] += sign * eps
            params = dict(zip(names, unflat(vec, list(theta.values())), strict=True))
            shifted.append(fn({k: v.requires_grad_(True) for k, v in params.items()}).item())
        grad[i] = (shifted[0] - shifted[1]) / (2 * eps)
    return grad


def old_log_probs_of(policy, theta, inner, valid, lr=0.1):
    adapted = adapt(policy, expand_to_tasks(theta, N), inner[0], lr)
    with torch.no_grad():
        obs = valid.observations[:-1]
        return task_log_probs(policy, adapted, obs, valid.actions, task_dim=1) - 0.05


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(problem, num_inner_steps):
    policy, inner, valid, advantages = problem
    gen = torch.Generator().manual_seed(1)
    inner = inner + [
        InnerBatch(make_episodes(gen), torch.randn(T, N, E, generator=gen).double())
        for _ in range(num_inner_steps - 1)
    ]
    maml = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.5))
    theta = policy_params(policy)
    old = old_log_probs_of(policy, theta, inner, valid)
    loss = maml.meta_loss(theta, inner, valid, advantages, old)
    analytic = flat(torch.autograd.grad(loss, list(theta.values())))
    numeric = finite_difference_grad(
        lambda th: maml.meta_loss(th, inner, valid, advantages, old), theta
    )
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-7)

    first_order = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.5, first_order=True))
    fo_loss = first_order.meta_loss(theta, inner, valid, advantages, old)
    fo_grad = flat(torch.autograd.grad(fo_loss, list(theta.values())))
    assert fo_loss.item() == pytest.approx(loss.item(), rel=1e-12)  # same objective value
    # ...but without the second-order terms the gradient is measurably different
    assert (fo_grad - numeric).norm() > 1e-3 * numeric.norm()


def test_adapt_gives_each_task_its_own_step_and_leaves_module_untouched(problem):
    policy, inner, _, _ = problem
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    theta = policy_params(policy)
    adapted = adapt(policy, expand_to_tasks(theta, N), inner[0], lr=0.1)
    episodes = inner[0].episodes
    for task in range(N):
        # reference: plain functional_call on this task's data alone
        task_theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        dist = functional_call(policy, task_theta, (episodes.observations[:-1, task],))
        log_probs = dist.log_prob(episodes.actions[:, task])
        mask = episodes.mask[:, task]
        loss = -(log_probs * inner[0].advantages[:, task] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(task_theta.values()))
        for (name, value), grad in zip(task_theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted[name][task], value - 0.1 * grad)
    for name, value in policy.named_parameters():
        assert torch.equal(value, before[name])


def test_gauss_newton_fvp_equals_double_backward_and_finite_differences(problem):
    policy, inner, valid, _ = problem
    settings = MAMLTRPOSettings(inner_lr=0.5, cg_damping=0.0)
    theta = policy_params(policy)
    leaves = list(theta.values())
    maml_gn = MAMLTRPO(policy, settings)
    adapted = maml_gn.adaptation.linearize(theta, inner, valid.observations[:-1])
    old = adapted.params
    gn = FisherOperator(maml_gn.adaptation, settings.fvp, settings.cg_damping)
    gn.add(adapted, valid.mask)
    db_settings = MAMLTRPOSettings(inner_lr=0.5, cg_damping=0.0, fvp="double_backward")
    maml_db = MAMLTRPO(policy, db_settings)
    db = FisherOperator(maml_db.adaptation, db_settings.fvp, db_settings.cg_damping)
    db.add(adapted, valid.mask)

    def kl_of(th):
        new = maml_gn.adapted_params(th, inner, create_graph=True)
        kl = task_kl(policy, old, new, valid.observations[:-1], task_dim=1)
        return task_masked_mean(kl, valid.mask)

    gen = torch.Generator().manual_seed(3)
    v = torch.randn(flat(leaves).numel(), generator=gen, dtype=torch.float64)
    # finite difference of the KL gradient along v
    eps = 1e-5
    base = flat([p.detach() for p in leaves])
    grads = []
    for sign in (1.0, -1.0):
        shifted = unflat(base + sign * eps * v, leaves)
        th = {k: s.clone().requires_grad_(True) for k, s in zip(theta, shifted, strict=True)}
        grads.append(flat(torch.autograd.grad(kl_of(th), list(th.values()))))
    numeric = (grads[0] - grads[1]) / (2 * eps)
    torch.testing.assert_close(db(v), numeric, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(gn(v), db(v), rtol=1e-8, atol=1e-10)


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    spd = a @ a.T + 0.5 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=gen, dtype=torch.float64)
    x, residual = conjugate_gradient(lambda v: spd @ v, b, iterations=30)
    torch.testing.assert_close(x, torch.linalg.solve(spd, b), rtol=1e-8, atol=1e-10)
    assert residual.norm() < 1e-6
    x3, residual3 = conjugate_gradient(lambda v: spd @ v, b, iterations=3)
    assert residual3.norm() > 1e-3  # 3 iterations do not solve an 8-dim system...
    torch.testing.assert_close(residual3, b - spd @ x3)  # ...but the residual is exact
    # so the step's quadratic form needs no extra matrix product
    assert x3 @ (b - residual3) == pytest.approx(float(x3 @ spd @ x3), rel=1e-10)


def test_double_backward_fvp_of_quadratic_is_its_matrix():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    spd = a @ a.T
    x = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    fvp = double_backward_fvp(0.5 * x @ spd @ x, [x], damping=0.1)
    v = torch.randn(4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(fvp(v), spd @ v + 0.1 * v)


def test_trpo_step_respects_trust_region_and_improves(problem):
    policy, inner, valid, advantages = problem
    settings = MAMLTRPOSettings(inner_lr=0.5, max_kl=0.01)
    maml = MAMLTRPO(policy, settings)
    theta0 = {k: v.detach().clone() for k, v in policy_params(policy).items()}
    old_adapted = {
        k: v.detach() for k, v in maml.adapted_params(policy_params(policy), inner, True).items()
    }
    stats = maml.step(inner, valid, advantages)
    assert stats.accepted
    assert 0 < stats.kl <= settings.max_kl
    assert stats.surrogate_after < stats.surrogate_before
    # recompute both numbers independently from the updated module
    with torch.no_grad():
        obs = valid.observations[:-1]
        old_lp = task_log_probs(policy, old_adapted, obs, valid.actions, 1)
    theta = policy_params(policy)
    new_adapted = maml.adapted_params(theta, inner, create_graph=False)
    kl = task_masked_mean(task_kl(policy, old_adapted, new_adapted, obs, 1), valid.mask)
    assert kl.item() == pytest.approx(stats.kl, rel=1e-9)
    after = maml.surrogate(new_adapted, valid, advantages, old_lp)
    assert after.item() == pytest.approx(stats.surrogate_after, rel=1e-9)
    before = maml.surrogate(old_adapted, valid, advantages, old_lp)
    assert before.item() == pytest.approx(stats.surrogate_before, rel=1e-9)
    assert any(not torch.equal(theta0[k], v) for k, v in theta.items())


def test_rejected_line_search_leaves_parameters_untouched(problem):
    policy, inner, valid, advantages = problem
    maml = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.5, max_kl=1e-3, ls_max_steps=3))
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    # advantages of zero: no step can improve the surrogate, so every candidate is rejected
    stats = maml.step(inner, valid, torch.zeros_like(advantages))
    assert not stats.accepted
    assert stats.line_search_steps == 3
    for name, value in policy.named_parameters():
        assert torch.equal(value, before[name])


@pytest.mark.parametrize("independent", [True, False])
def test_closed_form_gaussian_kl_hessian_equals_autograd(independent):
    from torch.distributions import Independent, Normal

    from meta_rl.algorithms.trpo import _autograd_kl_hessian, kl_hessian
    from meta_rl.functional import flatten_distribution

    gen = torch.Generator().manual_seed(6)
    loc = torch.randn(T, N, E, ACT, generator=gen, dtype=torch.float64)
    scale = torch.rand(T, N, E, ACT, generator=gen, dtype=torch.float64) + 0.2
    dist = Normal(loc, scale)
    if independent:
        dist = Independent(dist, 1)
    leaves, rebuild = flatten_distribution(dist)
    weights = torch.rand(dist.batch_shape, generator=gen, dtype=torch.float64)
    u = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in leaves]
    closed = kl_hessian(leaves, rebuild, weights)(u)
    reference = _autograd_kl_hessian([t.detach() for t in leaves], rebuild, weights)(u)
    for a, b in zip(closed, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
