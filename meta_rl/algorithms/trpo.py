"""TRPO machinery: conjugate gradient, Fisher-vector products, backtracking line search."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, kl_divergence

Vector = Tensor


def flat(tensors: Sequence[Tensor]) -> Vector:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Vector, like: Sequence[Tensor]) -> list[Tensor]:
    out, offset = [], 0
    for t in like:
        out.append(vector[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def conjugate_gradient(
    matvec: Callable[[Vector], Vector], b: Vector, iterations: int, tol: float = 1e-10
) -> tuple[Vector, Vector]:
    """Approximately solve ``A x = b`` for SPD ``A`` given only ``x -> A x``.

    Returns the solution and the final residual ``r = b - A x``. The residual's norm is
    logged as ``trpo/cg_residual`` (a large one means the Fisher system was not solved), and
    ``x^T A x = x^T (b - r)`` gives the step's quadratic form without another product.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = r @ r
    for _ in range(iterations):
        if r_dot <= tol:
            break
        ap = matvec(p)
        alpha = r_dot / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot = r @ r
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return x, r


def double_backward_fvp(
    kl: Tensor, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Vector], Vector]:
    """``v -> (H_kl + damping I) v`` by differentiating the KL twice (reference form).

    The KL gradient graph is built once and reused by every product.
    """
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def fvp(v: Vector) -> Vector:
        hv = flat(torch.autograd.grad(grads @ v, params, retain_graph=True))
        return hv + damping * v if damping else hv

    return fvp


class Jacobian(Protocol):
    """Products with the Jacobian of some output tensors w.r.t. a parameter vector."""

    def jvp(self, v: Vector) -> list[Tensor]:
        """``J v``: one tangent per output tensor."""
        ...

    def vjp(self, cotangents: Sequence[Tensor]) -> Vector:
        """``J^T u`` for one cotangent per output tensor."""
        ...


class AutogradJacobian:
    """The Jacobian of ``outputs`` w.r.t. ``params`` through their autograd graph (any policy).

    ``J v`` uses the double-vjp trick: ``J^T u`` is linear in a dummy ``u``, so differentiating
    it w.r.t. ``u`` gives ``J v``. That graph is built on the first ``jvp``, so a caller that
    only wants gradients never pays for it. The graph of ``outputs`` is kept for reuse.
    """

    def __init__(self, outputs: Sequence[Tensor], params: Sequence[Tensor]) -> None:
        self.outputs, self.params = list(outputs), list(params)
        self._dummies: list[Tensor] = []
        self._jt_u: Vector | None = None

    def vjp(self, cotangents: Sequence[Tensor]) -> Vector:
        grads = torch.autograd.grad(
            self.outputs, self.params, grad_outputs=list(cotangents), retain_graph=True
        )
        return flat(grads)

    def jvp(self, v: Vector) -> list[Tensor]:
        if self._jt_u is None:
            self._dummies = [torch.zeros_like(t, requires_grad=True) for t in self.outputs]
            jt_u = torch.autograd.grad(
                self.outputs, self.params, grad_outputs=self._dummies, create_graph=True
            )
            self._jt_u = flat(jt_u)
        return list(torch.autograd.grad(self._jt_u @ v, self._dummies, retain_graph=True))


def kl_hessian(
    dist_leaves: Sequence[Tensor],
    rebuild: Callable[[list[Tensor]], Distribution],
    weights: Tensor,
) -> Callable[[list[Tensor]], list[Tensor]]:
    """``u -> M u``, ``M`` the Hessian of ``sum(weights * KL(old || new))`` w.r.t. the new
    distribution's parameter tensors, at new = old = ``rebuild(dist_leaves)``.

    For a diagonal Gaussian (``Normal``, or ``Independent`` over one) ``M`` is diagonal:
    ``weights / scale^2`` on the mean and ``2 weights / scale^2`` on the scale, two
    multiplications per product. Any other distribution: autograd on the KL formula alone.
    """
    anchors = [leaf.detach() for leaf in dist_leaves]
    dist = rebuild(anchors)
    base, event_dims = dist, 0
    if isinstance(dist, Independent):
        base, event_dims = dist.base_dist, dist.reinterpreted_batch_ndims
    if type(base) is Normal:
        w = weights.reshape(*weights.shape, *[1] * event_dims)
        mean_curvature = w / base.scale.square()
        scale_curvature = 2.0 * mean_curvature
        # flatten_distribution gives a Normal's leaves in arg_constraints order: loc, scale
        return lambda u: [u[0] * mean_curvature, u[1] * scale_curvature]
    return _autograd_kl_hessian(anchors, rebuild, weights)


def _autograd_kl_hessian(
    anchors: list[Tensor], rebuild: Callable[[list[Tensor]], Distribution], weights: Tensor
) -> Callable[[list[Tensor]], list[Tensor]]:
    free = [a.clone().requires_grad_(True) for a in anchors]
    weighted_kl = (kl_divergence(rebuild(anchors), rebuild(free)) * weights).sum()
    kl_grad = torch.autograd.grad(weighted_kl, free, create_graph=True)
    return lambda u: list(torch.autograd.grad(kl_grad, free, grad_outputs=u, retain_graph=True))


def gauss_newton_fvp(
    jacobian: Jacobian,
    dist_leaves: Sequence[Tensor],
    rebuild: Callable[[list[Tensor]], Distribution],
    weights: Tensor,
    damping: float = 0.0,
) -> Callable[[Vector], Vector]:
    """``v -> (J^T M J + damping I) v``: the exact KL Hessian at the old parameters.

    ``J`` is the Jacobian of the distribution's parameter tensors ``dist_leaves`` (values at
    the old parameters) w.r.t. the parameters, through the whole adaptation, and ``M`` the
    Hessian of the weighted KL w.r.t. those distribution parameters (``kl_hessian``). At the
    old parameters the KL gradient is zero, so the Hessian's second term vanishes and this
    equals the double-backward product, but it never differentiates the adaptation three
    times.
    """
    metric = kl_hessian(dist_leaves, rebuild, weights)

    def fvp(v: Vector) -> Vector:
        product = jacobian.vjp(metric(jacobian.jvp(v)))
        return product + damping * v if damping else product

    return fvp


@dataclass(frozen=True)
class LineSearchResult:
    accepted: bool
    steps: int  # backtracking steps taken (== max_steps when nothing was accepted)
    loss: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[Vector], tuple[float, float]],
    start: Vector,
    full_step: Vector,
    loss_before: float,
    max_kl: float,
    max_steps: int,
    ratio: float,
) -> tuple[Vector, LineSearchResult]:
    """Shrink ``full_step`` by ``ratio`` until the loss improves and the KL stays in bound.

    ``evaluate(params_vector) -> (loss, kl)``. When no step qualifies, returns ``start``
    unchanged: a rejected update never moves the parameters.
    """
    loss, kl = loss_before, 0.0
    for step in range(max_steps):
        candidate = start + (ratio**step) * full_step
        loss, kl = evaluate(candidate)
        if loss < loss_before and kl <= max_kl:
            return candidate, LineSearchResult(True, step, loss, kl)
    return start, LineSearchResult(False, max_steps, loss, kl)
