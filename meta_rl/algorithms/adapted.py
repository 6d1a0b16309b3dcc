"""The adapted policies as a function of the initial parameters: MAML-TRPO's one seam.

Everything the meta-update needs from the inner loop is, for every task ``i``, the policy
``pi_{theta_i'(theta)}`` adapted from the shared ``theta`` on the post-adaptation observations:
its values (surrogate, line-search candidates, the trust region's old policy) and products
with the Jacobian ``J`` of its distribution parameters w.r.t. ``theta`` (the gradient
``J^T u``, the Fisher ``J^T M J v``). ``Adaptation`` is that interface, with two
implementations that give the same numbers:

- ``AutogradAdaptation`` (here): any policy; ``J`` is the autograd graph of the inner steps.
- ``meta_rl.algorithms.closed_form.ClosedFormAdaptation``: the paper's plain Gaussian MLP,
  ``J`` written by hand (faster, less memory).

``MAMLTRPO`` picks one in its constructor and never asks which it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from meta_rl.adaptation import REINFORCE, InnerLoss, adapt, adapt_steps
from meta_rl.algorithms.trpo import AutogradJacobian, Jacobian
from meta_rl.episodes import InnerBatch
from meta_rl.functional import (
    Params,
    TaskForward,
    expand_to_tasks,
    flatten_distribution,
    task_distribution,
)


@dataclass(frozen=True)
class InnerLoop:
    """What the inner loop is, for a strategy to differentiate: the policy adapted, the step
    size, whether second-order terms are dropped (FOMAML), and the inner loss."""

    policy: nn.Module
    lr: float
    first_order: bool = False
    loss: InnerLoss = REINFORCE


@dataclass(frozen=True)
class AdaptedPolicies:
    """Adapted policies at the old parameters: their distribution's parameter tensors, the
    function that rebuilds the distribution from them, the Jacobian of those tensors w.r.t.
    the initial parameters, and the adapted parameters themselves (detached)."""

    jacobian: Jacobian
    leaves: list[Tensor]
    rebuild: Callable[[list[Tensor]], Distribution]
    params: Params


class Adaptation(Protocol):
    """How MAML-TRPO gets the adapted policies and their Jacobian (see the module docstring).

    ``obs`` are observations ``[T, N, E, obs_dim]`` with the task in dim 1; ``inner`` holds
    one batch per inner step, sampled with the parameters of the step before.
    """

    def inner_step(self, params: Params, batch: InnerBatch) -> Params:
        """Per-task parameters after one inner step, values only (sampling needs no graph)."""
        ...

    def linearize(
        self, theta: Params, inner: list[InnerBatch], obs: Tensor, final: Params | None = None
    ) -> AdaptedPolicies:
        """The adapted policies on ``obs`` with their Jacobian w.r.t. ``theta``.

        ``final`` replaces the adapted parameters' values but not their Jacobian (the
        subsampled Fisher's Jacobian of one adaptation, expanded at another).
        """
        ...

    def distribution(self, theta: Params, inner: list[InnerBatch], obs: Tensor) -> Distribution:
        """The adapted policies on ``obs``, values only (a line-search candidate)."""
        ...


class AutogradAdaptation:
    """``Adaptation`` for any policy: the inner steps' autograd graph is the Jacobian.

    ``forward`` runs the policy with per-task parameters where no graph is needed (line-search
    candidates); the inner loss may be any ``InnerLoss``.
    """

    def __init__(self, loop: InnerLoop, forward: TaskForward = task_distribution) -> None:
        self.loop = loop
        self.policy = loop.policy
        self.forward = forward

    def adapted_params(
        self, theta: Params, inner: list[InnerBatch], create_graph: bool, num_tasks: int
    ) -> Params:
        """Per-task adapted parameters, differentiable w.r.t. ``theta`` with ``create_graph``."""
        return adapt_steps(
            self.policy,
            expand_to_tasks(theta, num_tasks),
            inner,
            self.loop.lr,
            first_order=self.loop.first_order,
            create_graph=create_graph,
            loss=self.loop.loss,
        )

    def inner_step(self, params: Params, batch: InnerBatch) -> Params:
        loop = self.loop
        return adapt(self.policy, params, batch, loop.lr, create_graph=False, loss=loop.loss)

    def linearize(
        self, theta: Params, inner: list[InnerBatch], obs: Tensor, final: Params | None = None
    ) -> AdaptedPolicies:
        params = self.adapted_params(theta, inner, create_graph=True, num_tasks=obs.shape[1])
        if final is not None:
            params = {k: v - v.detach() + final[k] for k, v in params.items()}
        leaves, rebuild = flatten_distribution(
            task_distribution(self.policy, params, obs, task_dim=1)
        )
        jacobian = AutogradJacobian(leaves, list(theta.values()))
        return AdaptedPolicies(
            jacobian, leaves, rebuild, {k: v.detach() for k, v in params.items()}
        )

    def distribution(self, theta: Params, inner: list[InnerBatch], obs: Tensor) -> Distribution:
        leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
        adapted = self.adapted_params(leaves, inner, create_graph=False, num_tasks=obs.shape[1])
        with torch.no_grad():
            adapted = {k: v.detach() for k, v in adapted.items()}
            return self.forward(self.policy, adapted, obs, 1)
