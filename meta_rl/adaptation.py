"""Inner-loop adaptation: one policy-gradient step per task, returning new parameter tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from meta_rl.agents.baseline import LinearFeatureBaseline, explained_variance
from meta_rl.agents.pg import discounted_returns, gae, normalize_advantages, reinforce_loss
from meta_rl.episodes import Episodes
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


@dataclass(frozen=True)
class InnerBatch:
    """Episodes of one inner step with their (fixed) advantages."""

    episodes: Episodes
    advantages: Tensor


def inner_loss(policy: nn.Module, params: Params, batch: InnerBatch) -> Tensor:
    """Per-task REINFORCE loss ``[N]`` of per-task ``params`` on the batch."""
    episodes = batch.episodes
    log_probs = task_log_probs(
        policy, params, episodes.observations[:-1], episodes.actions, task_dim=1
    )
    return reinforce_loss(log_probs, batch.advantages, episodes.mask)


def adapt(
    policy: nn.Module,
    params: Params,
    batch: InnerBatch,
    lr: float,
    *,
    first_order: bool = False,
    create_graph: bool = True,
) -> Params:
    """One inner step ``theta_i' = theta_i - lr * grad L_i(theta_i)`` for every task at once.

    ``params`` holds one parameter set per task (leading dim N; use ``expand_to_tasks`` for a
    shared starting point). Summing the per-task losses and differentiating w.r.t. the per-task
    tensors gives every task its own gradient in a single backward pass. With
    ``create_graph`` (and not ``first_order``) the result stays differentiable w.r.t. ``params``
    through the gradient itself: the second-order MAML meta-gradient. Never mutates the module.
    """
    losses = inner_loss(policy, params, batch)
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
) -> Params:
    """Chain one ``adapt`` per inner batch (batch k was sampled with the step-k parameters)."""
    for batch in batches:
        params = adapt(
            policy, params, batch, lr, first_order=first_order, create_graph=create_graph
        )
    return params


def detached(params: Params) -> Params:
    """Leaf copies that can start a fresh graph (for sampling with adapted parameters)."""
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}
