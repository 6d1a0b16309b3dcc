"""MAML-TRPO's cheaper meta-update is the same math: task chunks and the subsampled Fisher."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from meta_rl.agents.policies import CategoricalMLPPolicy
from meta_rl.algorithms.maml_trpo import MAMLTRPO, MAMLTRPOSettings, task_masked_mean
from meta_rl.algorithms.trpo import flat
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import policy_params, task_kl

from fakes import TinyGaussian, random_episodes

T, N, E, OBS, ACT = 5, 5, 4, 3, 2


def _episodes(gen: torch.Generator) -> Episodes:
    return random_episodes(gen, (T, N, E), OBS, ACT, ends=[(3, 1, 2), (1, 4, 0)])


@pytest.fixture
def meta_problem():
    gen = torch.Generator().manual_seed(0)
    policy = TinyGaussian(OBS, ACT, hidden=6, log_std=-0.2).double()
    for p in policy.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    inner = [InnerBatch(_episodes(gen), torch.randn(T, N, E, generator=gen, dtype=torch.float64))]
    return policy, inner, _episodes(gen), torch.randn(T, N, E, generator=gen, dtype=torch.float64)


def _reference_fisher(policy, inner, valid, stride):
    """Dense Hessian (autograd.functional.hessian) of the mean KL on every ``stride``-th step.

    Its Jacobian comes from adapting on every ``stride``-th inner step, its expansion point is
    the adaptation on all of them: with stride 1, the exact KL Hessian.
    """
    maml = MAMLTRPO(policy, MAMLTRPOSettings(inner_lr=0.5, task_chunk=0))
    theta = policy_params(policy)
    names, shapes = list(theta), [p.shape for p in theta.values()]
    start = flat([p.detach() for p in theta.values()])
    heads = [InnerBatch(_steps(b.episodes, stride), b.advantages[::stride]) for b in inner]
    valid = _steps(valid, stride)

    def params(vector):
        sizes = [s.numel() for s in shapes]
        parts = vector.split(sizes)
        return {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}

    leaf = start.clone().requires_grad_(True)  # the inner steps differentiate w.r.t. it
    old = {k: v.detach() for k, v in maml.adapted_params(params(leaf), inner, False).items()}
    at_start = maml.adapted_params(params(leaf), heads, create_graph=False)

    def mean_kl(vector):
        local = maml.adapted_params(params(vector), heads, create_graph=True)
        adapted = {k: old[k] + local[k] - at_start[k].detach() for k in local}
        kl = task_kl(policy, old, adapted, valid.observations[:-1], 1)
        return task_masked_mean(kl, valid.mask)

    return torch.autograd.functional.hessian(mean_kl, start)


def _steps(episodes: Episodes, stride: int) -> Episodes:
    """Steps 0, stride, 2 stride, ... (and the final observation row, which no loss reads)."""
    fields = {k: v[::stride] for k, v in episodes.tensors().items()}
    observations = episodes.observations
    fields["observations"] = torch.cat([observations[:-1][::stride], observations[-1:]])
    return Episodes(**fields)


@pytest.mark.parametrize("fvp", ["gauss_newton", "double_backward"])
@pytest.mark.parametrize("chunk", [1, 2, 0])
@pytest.mark.parametrize(("subsample", "stride"), [(1.0, 1), (0.5, 2), (0.3, 3)])
def test_chunked_subsampled_fisher_product_is_the_kl_hessian(
    meta_problem, fvp, chunk, subsample, stride
):
    policy, inner, valid, advantages = meta_problem
    settings = MAMLTRPOSettings(
        inner_lr=0.5, cg_damping=0.1, fvp=fvp, task_chunk=chunk, fisher_subsample=subsample
    )
    maml = MAMLTRPO(policy, settings)
    linearization = maml.linearize(policy_params(policy), inner, valid, advantages)
    grad, product = linearization.grad, linearization.fisher
    fisher = _reference_fisher(policy, inner, valid, stride)
    v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(product(v), fisher @ v + 0.1 * v, rtol=1e-9, atol=1e-12)


def test_chunked_trpo_step_equals_one_batch_step(meta_problem):
    policy, inner, valid, advantages = meta_problem
    results = []
    for chunk in (0, 2):
        module = copy.deepcopy(policy)
        stats = MAMLTRPO(
            module, MAMLTRPOSettings(inner_lr=0.5, cg_damping=1.0, task_chunk=chunk)
        ).step(inner, valid, advantages)
        results.append((stats, flat([p.detach() for p in module.parameters()])))
    (whole, theta_whole), (chunked, theta_chunked) = results
    assert whole.accepted and chunked.accepted
    assert chunked.line_search_steps == whole.line_search_steps
    assert chunked.surrogate_before == pytest.approx(whole.surrogate_before, rel=1e-12)
    assert chunked.grad_norm == pytest.approx(whole.grad_norm, rel=1e-12)
    # 10 CG iterations amplify float64 rounding (sums in another order) to ~1e-9 here
    for key in ("surrogate_after", "kl"):
        assert getattr(chunked, key) == pytest.approx(getattr(whole, key), rel=1e-7)
    torch.testing.assert_close(theta_chunked, theta_whole, rtol=1e-7, atol=1e-10)


def test_chunked_step_with_a_categorical_policy_equals_one_batch_step():
    """Chunks rebuild one old distribution for the line search: Categorical as well as Normal."""
    gen = torch.Generator().manual_seed(4)
    policy = CategoricalMLPPolicy(OBS, 4, hidden_sizes=(6,), activation="tanh", generator=gen)
    policy = policy.double()

    def discrete(episodes: Episodes) -> Episodes:
        actions = torch.randint(0, 4, (T, N, E), generator=gen)
        return dataclasses.replace(episodes, actions=actions)

    advantages = [torch.randn(T, N, E, generator=gen, dtype=torch.float64) for _ in range(2)]
    inner = [InnerBatch(discrete(_episodes(gen)), advantages[0])]
    valid = discrete(_episodes(gen))
    results = []
    for chunk in (0, 2):
        module = copy.deepcopy(policy)
        settings = MAMLTRPOSettings(inner_lr=0.5, cg_damping=1.0, task_chunk=chunk)
        stats = MAMLTRPO(module, settings).step(inner, valid, advantages[1])
        results.append((stats, flat([p.detach() for p in module.parameters()])))
    (whole, theta_whole), (chunked, theta_chunked) = results
    assert whole.accepted and chunked.accepted
    assert chunked.kl == pytest.approx(whole.kl, rel=1e-7)
    assert 0 < chunked.kl <= 0.01
    torch.testing.assert_close(theta_chunked, theta_whole, rtol=1e-7, atol=1e-10)
