"""Inner-loop adaptation: one policy-gradient step per task, returning new parameter tensors.

The inner objective is an ``InnerLoss``: a per-task loss from the log-probabilities of a
batch's actions. MAML's is ``REINFORCE``; an estimator whose loss is linear in the
log-probabilities says so (``linear_in_log_probs``), which is what the closed-form derivatives
of ``meta_rl.algorithms.closed_form`` need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from meta_rl.agents.baseline import LinearFeatureBaseline, explained_variance
from meta_rl.agents.pg import discounted_returns, gae, normalize_advantages, reinforce_loss
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import Params, task_log_probs


@dataclass(frozen=True)
class AdvantageEstimator:
    """Per-task advantages: linear-feature baseline fitted on the batch itself, then GAE."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize: bool = True
    baseline: LinearFeatureBaseline = field(default_factory=LinearFeatureBaseline)

    def __call__(self, episodes: Episodes) -> tuple[Tensor, float]:
        """Detached advantages ``[T, N, E]`` and the baseline's explained variance."""
        returns = discounted_returns(episodes.rewards, episodes.mask, self.gamma)
        values = self.baseline.fit_predict(episodes.observations, returns, episodes.mask)
        advantages = gae(
            episodes.rewards,
            values,
            episodes.mask,
            episodes.terminated,
            self.gamma,
            self.gae_lambda,
        )
        if self.normalize:
            advantages = normalize_advantages(advantages, episodes.mask)
        ev = explained_variance(values[:-1], returns, episodes.mask)
        return advantages.detach(), ev


class InnerLoss(Protocol):
    """Per-task inner loss ``[N]`` (to minimise) from the log-probs ``[T, N, E]`` of the batch's
    actions under each task's parameters."""

    # True when the loss is sum_t w_t * log_prob_t with weights that do not depend on the
    # log-probs: the closed-form inner-step derivatives are exact only then
    linear_in_log_probs: ClassVar[bool]

    def __call__(self, log_probs: Tensor, batch: InnerBatch) -> Tensor: ...


@dataclass(frozen=True)
class ReinforceLoss:
    """MAML's inner loss: per-task masked mean of ``-log_prob * advantage``."""

    linear_in_log_probs: ClassVar[bool] = True

    def __call__(self, log_probs: Tensor, batch: InnerBatch) -> Tensor:
        return reinforce_loss(log_probs, batch.advantages, batch.episodes.mask)


REINFORCE = ReinforceLoss()


def magic_box(x: Tensor) -> Tensor:
    """DiCE's operator (Foerster et al. 2018): value 1, and ``d box(x) = box(x) dx``, so a
    product with it carries the score-function term of ``x`` into every derivative order."""
    return torch.exp(x - x.detach())


@dataclass(frozen=True)
class LVCLoss:
    """ProMP's low-variance curvature inner loss (Rothfuss et al. 2019): REINFORCE with each
    log-prob replaced by ``box(log_prob)``, the likelihood ratio ``pi / stop(pi)`` of its own
    step. Same value and gradient as REINFORCE; its Hessian adds ``A_t g_t g_t^T`` (``g_t`` the
    step's score), the curvature of the expected return that REINFORCE's Hessian lacks,
    without DiCE's cross-step terms (less variance, a little bias)."""

    linear_in_log_probs: ClassVar[bool] = False

    def __call__(self, log_probs: Tensor, batch: InnerBatch) -> Tensor:
        in_episode = batch.episodes.mask > 0  # padded steps' log-probs may be anything
        ratio = magic_box(torch.where(in_episode, log_probs, 0.0))
        return reinforce_loss(ratio, batch.advantages, batch.episodes.mask)


LVC = LVCLoss()


def inner_loss(
    policy: nn.Module, params: Params, batch: InnerBatch, loss: InnerLoss = REINFORCE
) -> Tensor:
    """Per-task inner loss ``[N]`` (REINFORCE by default) of per-task ``params`` on the batch."""
    episodes = batch.episodes
    log_probs = task_log_probs(
        policy, params, episodes.observations[:-1], episodes.actions, task_dim=1
    )
    return loss(log_probs, batch)


def adapt(
    policy: nn.Module,
    params: Params,
    batch: InnerBatch,
    lr: float,
    *,
    first_order: bool = False,
    create_graph: bool = True,
    loss: InnerLoss = REINFORCE,
) -> Params:
    """One inner step ``theta_i' = theta_i - lr * grad L_i(theta_i)`` for every task at once.

    ``params`` holds one parameter set per task (leading dim N; use ``expand_to_tasks`` for a
    shared starting point). Summing the per-task losses and differentiating w.r.t. the per-task
    tensors gives every task its own gradient in a single backward pass. With
    ``create_graph`` (and not ``first_order``) the result stays differentiable w.r.t. ``params``
    through the gradient itself: the second-order MAML meta-gradient. Never mutates the module.
    """
    losses = inner_loss(policy, params, batch, loss)
    keep_graph = create_graph and not first_order
    grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=keep_graph)
    return {
        name: value - lr * (grad if keep_graph else grad.detach())
        for (name, value), grad in zip(params.items(), grads, strict=True)
    }


def adapt_steps(
    policy: nn.Module,
    params: Params,
    batches: list[InnerBatch],
    lr: float,
    *,
    first_order: bool = False,
    create_graph: bool = True,
    loss: InnerLoss = REINFORCE,
) -> Params:
    """Chain one ``adapt`` per inner batch (batch k was sampled with the step-k parameters)."""
    for batch in batches:
        params = adapt(
            policy,
            params,
            batch,
            lr,
            first_order=first_order,
            create_graph=create_graph,
            loss=loss,
        )
    return params


def detached(params: Params) -> Params:
    """Leaf copies that can start a fresh graph (for sampling with adapted parameters)."""
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}
