"""Closed-form derivatives of the paper's policy through its MAML inner steps.

The meta-update needs ``J v`` and ``J^T u`` about ten times per iteration, ``J`` being the
Jacobian of the adapted policies' distribution parameters w.r.t. the initial parameters,
through every inner policy-gradient step. Autograd gets them by differentiating the graph of
a backward pass: right for any policy, but it allocates a fresh full-size temporary for
nearly every step of the chain rule, and some of its matrix products come out in layouts MKL
runs much slower than the transposed ones (``benchmarks/RESULTS.md`` has the operator counts
and times per Fisher product of both paths).

For the policy of the MAML paper and its ports, a diagonal Gaussian whose mean is an MLP and
whose log-std is state-independent (``meta_rl.agents.policies.GaussianMLPPolicy``), this module
writes the same derivatives by hand: forward mode (the R-operator, Pearlmutter 1994) for ``J v`` and
the inner-loss Hessian-vector products, reverse mode for ``J^T u``. The activations and
backward signals of every inner step are computed once per meta-update and reused by every
product, and the forward passes take the policy's own modules (the fast inference tanh).
The tests hold it to autograd's numbers for every supported activation, several inner steps,
first order, padded episodes and a clamped log-std.

Only the policy is special-cased. The inner loss may be any ``InnerLoss`` linear in the
log-probabilities (REINFORCE): its per-step weights are taken from it by autograd, which is
exact only for such a loss, so ``ClosedFormAdaptation`` refuses any other. The KL metric stays
generic (``meta_rl.algorithms.trpo.gauss_newton_fvp``).

What MAML-TRPO uses: ``ClosedFormAdaptation``, its ``Adaptation`` strategy
(``meta_rl.algorithms.adapted``), and ``task_forward``, the per-task forward that samplers and
line-search candidates are handed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from meta_rl.adaptation import REINFORCE, InnerLoss
from meta_rl.agents.policies import GaussianMLPPolicy, Tanh, diagonal_gaussian
from meta_rl.algorithms.adapted import AdaptedPolicies, InnerLoop
from meta_rl.algorithms.trpo import Vector, flat, unflat
from meta_rl.episodes import InnerBatch
from meta_rl.functional import Params, flatten_distribution, shared_params
from meta_rl.functional import task_distribution as generic_task_distribution

# activation -> (its derivative as a function of its output h, and a function s(h) with
# d(derivative) = s(h) * dh, the second-order factor; None where it vanishes)
_CURVATURE: dict[type[nn.Module], tuple[Callable[[Tensor], Tensor], Callable | None]] = {
    Tanh: (lambda h: 1.0 - h * h, lambda h: -2.0 * h),
    nn.Tanh: (lambda h: 1.0 - h * h, lambda h: -2.0 * h),
    nn.Sigmoid: (lambda h: h * (1.0 - h), lambda h: 1.0 - 2.0 * h),
    nn.ReLU: (lambda h: (h > 0).to(h.dtype), None),
}


def is_plain_gaussian_mlp(policy: nn.Module) -> bool:
    """A ``GaussianMLPPolicy`` itself (a subclass may change ``forward``), linear layers and
    activations alternating as ``meta_rl.agents.policies.mlp`` builds them."""
    if type(policy) is not GaussianMLPPolicy:
        return False
    linear = list(policy.mean_net)[0::2]
    return all(type(layer) is nn.Linear for layer in linear)


def supports(policy: nn.Module) -> bool:
    """True when the closed-form derivatives apply: a plain Gaussian MLP whose activations are
    known here and whose parameters all train."""
    return (
        is_plain_gaussian_mlp(policy)
        and all(type(act) in _CURVATURE for act in list(policy.mean_net)[1::2])
        and all(p.requires_grad for p in policy.parameters())
    )


@dataclass
class _Point:
    """Policy parameters (or a direction): shared ones without a task dim, else a leading one."""

    log_std: Tensor
    weights: list[Tensor]
    biases: list[Tensor]

    def minus(self, lr: float, other: _Point) -> _Point:
        return _Point(
            self.log_std - lr * other.log_std,
            [a - lr * b for a, b in zip(self.weights, other.weights, strict=True)],
            [a - lr * b for a, b in zip(self.biases, other.biases, strict=True)],
        )


def _names(policy: GaussianMLPPolicy) -> tuple[list[str], list[str]]:
    """Parameter names of the mean network's weights and biases, input layer first."""
    linear = [f"mean_net.{i}" for i in range(0, len(policy.mean_net), 2)]
    return [f"{n}.weight" for n in linear], [f"{n}.bias" for n in linear]


def _point_of(policy: GaussianMLPPolicy, params: Params) -> _Point:
    weights, biases = _names(policy)
    return _Point(params["log_std"], [params[n] for n in weights], [params[n] for n in biases])


def _params_of(policy: GaussianMLPPolicy, point: _Point, order: Sequence[str]) -> Params:
    """``point`` as a parameter dict with the keys in ``order``."""
    weights, biases = _names(policy)
    out = {"log_std": point.log_std}
    out.update(zip(weights, point.weights, strict=True))
    out.update(zip(biases, point.biases, strict=True))
    return {name: out[name] for name in order}


def _rows(t: Tensor) -> Tensor:
    """``[T, N, E, ...]`` (time, task, episode) -> ``[N, T * E, ...]``: one row per step."""
    t = t.movedim(1, 0)
    return t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:])


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ W^T + b`` for rows ``x[N, R, in]``, with shared or per-task ``W`` and ``b``."""
    if weight.dim() == 2:
        flat_x = x.reshape(-1, x.shape[-1])
        out = flat_x @ weight.T if bias is None else torch.addmm(bias, flat_x, weight.T)
        return out.view(*x.shape[:-1], -1)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(1, 2))


def _add_linear(out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """``out += x @ W^T`` in place."""
    if weight.dim() == 2:
        out.view(-1, out.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), weight.T)
        return out
    return out.baddbmm_(x, weight.transpose(1, 2))


def _backprop(g: Tensor, weight: Tensor) -> Tensor:
    """``g @ W``: a layer's output gradient to its input gradient."""
    return g @ weight if weight.dim() == 2 else torch.bmm(g, weight)


def _add_backprop(out: Tensor, g: Tensor, weight: Tensor) -> Tensor:
    """``out += g @ W`` in place."""
    if weight.dim() == 2:
        out.view(-1, out.shape[-1]).addmm_(g.reshape(-1, g.shape[-1]), weight)
        return out
    return out.baddbmm_(g, weight)


def _outer(g: Tensor, h: Tensor) -> Tensor:
    """Per-task ``sum_r g_r h_r^T`` -> ``[N, out, in]``.

    The narrow side goes first: MKL multiplies ``[64, R] x [R, 2]`` much slower than
    ``[2, R] x [R, 64]`` (``benchmarks/RESULTS.md``).
    """
    if g.shape[-1] <= h.shape[-1]:
        return torch.bmm(g.transpose(1, 2), h)
    return torch.bmm(h.transpose(1, 2), g).transpose(1, 2)


class _MLPAt:
    """An MLP's forward pass at one point on rows ``x[N, R, in]``, kept for its derivatives."""

    def __init__(self, point: _Point, activations: Sequence[nn.Module], x: Tensor) -> None:
        self.point = point
        self.activations = activations
        self.inputs = [x]  # the input of every linear layer
        h = x
        for weight, bias, act in zip(point.weights, point.biases, activations, strict=False):
            h = act(_linear(h, weight, bias))  # the module's own (inference) forward
            self.inputs.append(h)
        self.mean = _linear(h, point.weights[-1], point.biases[-1])
        self._slopes: list[Tensor] | None = None

    @property
    def slopes(self) -> list[Tensor]:
        """Activation derivative at every hidden layer (on first use: sampling and line-search
        candidates never need them)."""
        if self._slopes is None:
            self._slopes = [
                _CURVATURE[type(act)][0](h)
                for act, h in zip(self.activations, self.inputs[1:], strict=True)
            ]
        return self._slopes

    def jvp(self, direction: _Point) -> tuple[Tensor, list[Tensor]]:
        """Tangent of the mean along ``direction``, and of every hidden activation."""
        hidden: list[Tensor] = []
        tangent = None
        for layer, (dw, db) in enumerate(zip(direction.weights, direction.biases, strict=True)):
            rz = _linear(self.inputs[layer], dw, db)
            if tangent is not None:
                _add_linear(rz, tangent, self.point.weights[layer])
            if layer < len(self.activations):
                tangent = rz.mul_(self.slopes[layer])
                hidden.append(tangent)
        return rz, hidden

    def vjp(self, grad_mean: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per-task weight and bias gradients from ``d/d mean``, and the gradient w.r.t. the
        pre-activation of every layer."""
        weights = self.point.weights
        g = grad_mean
        gw, gb, pre = [], [], []
        for layer in range(len(weights) - 1, -1, -1):
            gw.append(_outer(g, self.inputs[layer]))
            gb.append(g.sum(-2))
            pre.append(g)
            if layer > 0:
                g = _backprop(g, weights[layer]).mul_(self.slopes[layer - 1])
        return gw[::-1], gb[::-1], pre[::-1]


class _InnerStep:
    """One inner policy-gradient step at ``point`` on one batch: the adapted point, and the
    inner loss's Hessian-vector products for the Jacobian of that step."""

    def __init__(
        self,
        point: _Point,
        activations: Sequence[nn.Module],
        batch: InnerBatch,
        lr: float,
        min_log_std: float,
        loss: InnerLoss = REINFORCE,
    ) -> None:
        episodes = batch.episodes
        self.activations = activations
        self.net = _MLPAt(point, activations, _rows(episodes.observations[:-1]))
        # d(sum of per-task losses) / d log_prob, from the loss itself: the same at every
        # log-prob because the loss is linear in them (ClosedFormAdaptation checks)
        log_probs = torch.zeros_like(episodes.mask, requires_grad=True)
        with torch.enable_grad():
            total = loss(log_probs, batch).sum()
            (step_weight,) = torch.autograd.grad(total, log_probs)
        weight = _rows(step_weight).unsqueeze(-1)
        valid = _rows(episodes.mask).unsqueeze(-1) > 0
        self.std_free = (point.log_std >= min_log_std).to(weight.dtype)  # clamp's derivative
        inv_var = torch.exp(-2.0 * point.log_std.clamp(min=min_log_std)).unsqueeze(-2)
        diff = torch.where(valid, _rows(episodes.actions) - self.net.mean, 0.0)
        # log N(a; mu, s) = -(a - mu)^2 / (2 s^2) - log s - const, s = exp(clamped log_std)
        self.grad_mean = weight * diff * inv_var
        self.weight_inv_var = weight * inv_var
        self.log_std_curvature = (2.0 * weight * diff * diff * inv_var).sum(-2)
        grad_log_std = (weight * (diff * diff * inv_var - 1.0)).sum(-2) * self.std_free
        gw, gb, self.grad_pre = self.net.vjp(self.grad_mean)
        self.next = point.minus(lr, _Point(grad_log_std, gw, gb))
        self._second: list[Tensor | None] | None = None

    def _second_order(self) -> list[Tensor | None]:
        """``dL/dh * s(h)`` per hidden layer (None where the activation has no curvature),
        computed on the first product: line-search candidates never need it."""
        if self._second is None:
            weights = self.net.point.weights
            self._second = []
            for layer, act in enumerate(self.activations):
                factor = _CURVATURE[type(act)][1]
                h = self.net.inputs[layer + 1]
                grad_h = _backprop(self.grad_pre[layer + 1], weights[layer + 1])
                self._second.append(grad_h.mul_(factor(h)) if factor is not None else None)
        return self._second

    def hvp(self, v: _Point) -> _Point:
        """Per-task Hessian of the inner loss times ``v`` (shared or per task).

        The R-operator: the tangent of the backward pass along ``v``. At the output it comes
        from the Gaussian log-density's second derivatives; each layer passes it back through
        its weights plus the weights' tangent times the kept backward signal, then through the
        activation's slope plus the slope's own tangent (``_second_order``).
        """
        net, weights = self.net, self.net.point.weights
        second = self._second_order()
        r_mean, r_hidden = net.jvp(v)
        r_log_std = v.log_std * self.std_free
        r_log_std_rows = r_log_std.unsqueeze(-2)
        r_g = -self.weight_inv_var * r_mean - 2.0 * self.grad_mean * r_log_std_rows
        h_log_std = (-2.0 * self.grad_mean * r_mean).sum(-2) - self.log_std_curvature * r_log_std
        hw, hb = [], []
        for layer in range(len(weights) - 1, -1, -1):
            gw = _outer(r_g, net.inputs[layer])
            hb.append(r_g.sum(-2))
            if layer > 0:
                gw = gw + _outer(self.grad_pre[layer], r_hidden[layer - 1])
                r_gh = _backprop(r_g, weights[layer])
                _add_backprop(r_gh, self.grad_pre[layer], v.weights[layer])
                r_g = r_gh.mul_(net.slopes[layer - 1])
                if second[layer - 1] is not None:
                    r_g.addcmul_(second[layer - 1], r_hidden[layer - 1])
            hw.append(gw)
        return _Point(h_log_std * self.std_free, hw[::-1], hb[::-1])


class AdaptedGaussianMLP:
    """The adapted policies' action distributions and their Jacobian w.r.t. the initial
    parameters, for a ``GaussianMLPPolicy`` adapted by ``meta_rl.adaptation.adapt_steps``.

    ``distribution`` is that of ``task_distribution(policy, adapt_steps(...), obs, 1)``;
    ``jvp`` and ``vjp`` are products with the Jacobian of its parameter tensors (loc, scale),
    as ``meta_rl.algorithms.trpo.AutogradJacobian`` would give them from the graph. ``final``
    replaces the adapted parameters' values (not their Jacobian), as the subsampled Fisher
    (``FisherOperator.add_subsampled``) needs.
    """

    @torch.no_grad()
    def __init__(
        self,
        policy: GaussianMLPPolicy,
        theta: Params,
        inner: Sequence[InnerBatch],
        obs: Tensor,
        lr: float,
        first_order: bool = False,
        final: Params | None = None,
        loss: InnerLoss = REINFORCE,
    ) -> None:
        activations, min_log_std = list(policy.mean_net)[1::2], policy.min_log_std
        self.names = list(theta)
        self._like = [v.detach() for v in theta.values()]
        self.policy = policy
        self.first_order = first_order
        self.lr = lr
        point = _point_of(self.policy, {k: v.detach() for k, v in theta.items()})
        self.steps: list[_InnerStep] = []
        for batch in inner:
            self.steps.append(_InnerStep(point, activations, batch, lr, min_log_std, loss))
            point = self.steps[-1].next
        if final is not None:
            point = _point_of(self.policy, {k: v.detach() for k, v in final.items()})
        if not self.steps and final is None:  # no inner step: every task at theta itself
            point = _point_of(
                self.policy,
                {k: v.detach().expand(obs.shape[1], *v.shape) for k, v in theta.items()},
            )
        self.adapted = _params_of(self.policy, point, self.names)
        self.shape = obs.shape[:-1]  # [T, N, E]
        self.net = _MLPAt(point, activations, _rows(obs))
        self.std_free = (point.log_std >= min_log_std).to(obs.dtype)
        self.log_std = point.log_std.clamp(min=min_log_std)

    def _to_steps(self, rows: Tensor) -> Tensor:
        """``[N, T * E, ...]`` -> ``[T, N, E, ...]`` (a view)."""
        t, n, e = self.shape
        return rows.view(n, t, e, *rows.shape[2:]).movedim(0, 1)

    def distribution(self) -> Distribution:
        """The adapted policies' action distributions on ``obs`` (batch shape ``[T, N, E]``)."""
        log_std = self.log_std.unsqueeze(0).unsqueeze(2).expand(*self.shape, -1)
        return diagonal_gaussian(self._to_steps(self.net.mean), log_std)

    def jvp(self, v: Vector) -> list[Tensor]:
        """Tangents of (loc, scale) along the initial-parameter direction ``v``."""
        values = dict(zip(self.names, unflat(v, self._like), strict=True))
        direction = _point_of(self.policy, values)
        if not self.first_order:
            for step in self.steps:
                direction = direction.minus(self.lr, step.hvp(direction))
        r_mean, _ = self.net.jvp(direction)
        scale = self.log_std.exp()
        r_scale = scale * self.std_free * direction.log_std
        r_scale = r_scale.unsqueeze(0).unsqueeze(2).expand(*self.shape, -1)
        return [self._to_steps(r_mean), r_scale]

    def vjp(self, cotangents: Sequence[Tensor]) -> Vector:
        """Initial-parameter gradient of ``<(loc, scale), cotangents>``, summed over tasks."""
        grad_loc, grad_scale = cotangents
        scale = self.log_std.exp()
        g_log_std = grad_scale.sum(dim=(0, 2)) * scale * self.std_free
        gw, gb, _ = self.net.vjp(_rows(grad_loc))
        p = _Point(g_log_std, gw, gb)
        if not self.first_order:
            for step in reversed(self.steps):
                p = p.minus(self.lr, step.hvp(p))
        return flat([t.sum(0) for t in _params_of(self.policy, p, self.names).values()])


def task_forward(policy: nn.Module, params: Params, obs: Tensor, task_dim: int) -> Distribution:
    """``meta_rl.functional.task_distribution``, as batched matrix products where they apply: a
    plain Gaussian MLP with per-task parameters, no graph wanted (a ``TaskForward``)."""
    if (
        obs.dim() >= 3
        and not torch.is_grad_enabled()
        and is_plain_gaussian_mlp(policy)
        and shared_params(params) is None
    ):
        return task_distribution(policy, params, obs, task_dim)
    return generic_task_distribution(policy, params, obs, task_dim)


@torch.no_grad()
def task_distribution(
    policy: GaussianMLPPolicy, params: Params, obs: Tensor, task_dim: int
) -> Distribution:
    """``meta_rl.functional.task_distribution`` for a plain Gaussian MLP, as batched matrix
    products: vmap over ``functional_call`` costs more Python per call than a sampling step's
    forward itself (``benchmarks/RESULTS.md``)."""
    point = _point_of(policy, params)
    per_task = obs.movedim(task_dim, 0)
    rows = per_task.reshape(per_task.shape[0], -1, per_task.shape[-1])
    net = _MLPAt(point, list(policy.mean_net)[1::2], rows)
    mean = net.mean.view(*per_task.shape[:-1], -1).movedim(0, task_dim)
    log_std = point.log_std.clamp(min=policy.min_log_std)
    broadcast = log_std.view(log_std.shape[0], *[1] * (per_task.dim() - 2), -1)
    return diagonal_gaussian(mean, broadcast.movedim(0, task_dim))


@torch.no_grad()
def inner_step(
    policy: GaussianMLPPolicy,
    params: Params,
    batch: InnerBatch,
    lr: float,
    loss: InnerLoss = REINFORCE,
) -> Params:
    """``meta_rl.adaptation.adapt`` without a graph: each task's parameters after one inner
    step (values only, as sampling after an inner step needs them)."""
    point = _point_of(policy, params)
    step = _InnerStep(point, list(policy.mean_net)[1::2], batch, lr, policy.min_log_std, loss)
    return _params_of(policy, step.next, list(params))


class ClosedFormAdaptation:
    """``meta_rl.algorithms.adapted.Adaptation`` for a plain Gaussian MLP (``supports``), by
    the closed form above. Its Jacobian is not an autograd graph, so it serves the
    Gauss-Newton Fisher only.

    The inner loss must be linear in the log-probs (``loss.linear_in_log_probs``, e.g.
    REINFORCE): the inner-loss Hessian here treats its per-step weights as constants.
    """

    def __init__(self, loop: InnerLoop) -> None:
        policy, loss = loop.policy, loop.loss
        if not supports(policy):
            raise ValueError(
                f"closed-form derivatives need a plain GaussianMLPPolicy with trainable "
                f"parameters and a known activation, got {type(policy).__name__}"
            )
        if not getattr(loss, "linear_in_log_probs", False):
            raise ValueError(
                f"closed-form derivatives need an inner loss linear in the log-probs "
                f"(REINFORCE), got {type(loss).__name__}: use the autograd adaptation"
            )
        self.loop = loop
        self.policy = policy

    def _adapt(
        self, theta: Params, inner: list[InnerBatch], obs: Tensor, final: Params | None = None
    ) -> AdaptedGaussianMLP:
        return AdaptedGaussianMLP(
            self.policy,
            theta,
            inner,
            obs,
            self.loop.lr,
            self.loop.first_order,
            final,
            self.loop.loss,
        )

    def inner_step(self, params: Params, batch: InnerBatch) -> Params:
        return inner_step(self.policy, params, batch, self.loop.lr, self.loop.loss)

    def linearize(
        self, theta: Params, inner: list[InnerBatch], obs: Tensor, final: Params | None = None
    ) -> AdaptedPolicies:
        adapted = self._adapt(theta, inner, obs, final)
        leaves, rebuild = flatten_distribution(adapted.distribution())
        return AdaptedPolicies(adapted, leaves, rebuild, adapted.adapted)

    def distribution(self, theta: Params, inner: list[InnerBatch], obs: Tensor) -> Distribution:
        return self._adapt(theta, inner, obs).distribution()
