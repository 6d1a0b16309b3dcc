"""ProMP (Rothfuss et al. 2019): proximal meta-policy search.

The same iteration as MAML-TRPO (``AdaptingLearner``: sample, inner steps, sample again), with
two changes. The inner steps are differentiated through ProMP's low-variance curvature loss
(``meta_rl.adaptation.LVCLoss``), and the meta-update is ``promp_steps`` Adam steps on

    mean_i clipped-ratio surrogate of the adapted policy i  -  sum_k eta_k KL_k,

the ratio being that of the adapted policies under the current and the sampling-time initial
parameters on the post-adaptation episodes (PPO's clip), and ``KL_k`` the mean KL between the
step-k policies (those that sampled inner batch k) before and after, on that batch. Each
``eta_k`` is doubled when its KL ends above 1.5 ``kl_target`` and halved below it / 1.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meta_rl.adaptation import LVC, REINFORCE, AdvantageEstimator, adapt
from meta_rl.agents.pg import ppo_clip_loss
from meta_rl.algorithms.adapted import AutogradAdaptation, InnerLoop
from meta_rl.algorithms.closed_form import task_forward
from meta_rl.algorithms.maml_trpo import AdaptingLearner, MAMLRollouts, task_masked_mean
from meta_rl.algorithms.settings import PROMPSettings
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import Params, expand_to_tasks, policy_params, task_kl, task_log_probs
from meta_rl.samplers.base import Sampler


@dataclass(frozen=True)
class Objective:
    """ProMP's loss (to minimise) at some initial parameters, with its parts."""

    loss: Tensor
    surrogate: Tensor  # clipped surrogate term (to minimise), mean over tasks
    inner_kls: list[Tensor]  # KL_k of every inner step's policy, mean over its batch
    post_log_probs: Tensor  # of the post-adaptation actions under the adapted policies
    step_params: list[Params]  # per-task parameters that sampled each inner batch


class ProMP:
    """ProMP's meta-update on the policy's parameters in place; the KL coefficients and Adam's
    moments are its state (``state_dict``), so a resumed run continues exactly."""

    def __init__(self, policy: nn.Module, settings: PROMPSettings) -> None:
        self.policy = policy
        self.settings = settings
        loss = LVC if settings.inner_estimator == "lvc" else REINFORCE
        self.adaptation = AutogradAdaptation(
            InnerLoop(policy, settings.inner_lr, False, loss), forward=task_forward
        )
        self.optimizer = torch.optim.Adam(policy_params(policy).values(), lr=settings.outer_lr)
        self.kl_coefficients = [settings.kl_penalty] * settings.num_inner_steps

    def objective(
        self,
        theta: Params,
        inner: list[InnerBatch],
        post: Episodes,
        advantages: Tensor,
        old: Objective | None = None,
    ) -> Objective:
        """The loss at ``theta``, differentiable w.r.t. it; ``old`` is the objective at the
        sampling-time parameters (None: this is it, the ratios are 1 and the KLs 0)."""
        loop = self.adaptation.loop
        params = expand_to_tasks(theta, post.num_tasks)
        step_params, kls = [], []
        for k, batch in enumerate(inner):
            # the old point's copies: the optimiser changes theta in place
            step_params.append(
                params if old else {n: v.detach().clone() for n, v in params.items()}
            )
            if old is not None:
                obs = batch.episodes.observations[:-1]
                kl = task_kl(self.policy, old.step_params[k], params, obs, task_dim=1)
                kls.append(task_masked_mean(kl, batch.episodes.mask))
            params = adapt(self.policy, params, batch, loop.lr, loss=loop.loss)
        log_probs = task_log_probs(
            self.policy, params, post.observations[:-1], post.actions, task_dim=1
        )
        old_log_probs = log_probs.detach() if old is None else old.post_log_probs
        surrogate = ppo_clip_loss(
            log_probs, old_log_probs, advantages, post.mask, self.settings.clip
        ).mean()
        penalty = sum(
            (eta * kl for eta, kl in zip(self.kl_coefficients, kls, strict=False)), 0.0
        )  # no KLs at the old point
        return Objective(surrogate + penalty, surrogate, kls, old_log_probs, step_params)

    def step(self, inner: list[InnerBatch], post: Episodes, advantages: Tensor) -> dict[str, float]:
        """``promp_steps`` Adam steps on the objective, then the KL coefficients' adaptation."""
        s = self.settings
        theta = policy_params(self.policy)
        old = self.objective(theta, inner, post, advantages)  # the sampling-time policies
        before = old.surrogate.item()
        for _ in range(s.promp_steps):
            current = self.objective(theta, inner, post, advantages, old)
            self.optimizer.zero_grad(set_to_none=True)
            current.loss.backward()
            self.optimizer.step()
        final = self.objective(theta, inner, post, advantages, old)
        kls = [kl.item() for kl in final.inner_kls]
        metrics = {
            "meta/surrogate_before": before,
            "meta/surrogate_after": final.surrogate.item(),
        }
        for k, kl in enumerate(kls):
            metrics[f"promp/inner_kl_{k}"] = kl
            metrics[f"promp/kl_coefficient_{k}"] = self.kl_coefficients[k]
        if s.kl_target is not None:
            self.kl_coefficients = adapted_coefficients(self.kl_coefficients, kls, s.kl_target)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "kl_coefficients": self.kl_coefficients}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coefficients = [float(c) for c in state["kl_coefficients"]]


def adapted_coefficients(coefficients: list[float], kls: list[float], target: float) -> list[float]:
    """ProMP's rule per inner step: x2 when the KL is above 1.5 target, /2 below target / 1.5."""
    out = []
    for eta, kl in zip(coefficients, kls, strict=True):
        if kl > 1.5 * target:
            eta *= 2.0
        elif kl < target / 1.5:
            eta /= 2.0
        out.append(eta)
    return out


class ProMPLearner(AdaptingLearner):
    """ProMP in the trainer: MAML-TRPO's collection, ProMP's update (phase ``meta_gradient``)."""

    def __init__(
        self,
        policy: nn.Module,
        sampler: Sampler,
        advantages: AdvantageEstimator,
        settings: PROMPSettings,
    ) -> None:
        super().__init__(policy, sampler, advantages)
        self.promp = ProMP(policy, settings)
        self.adaptation = self.promp.adaptation
        self.num_inner_steps = settings.num_inner_steps

    def update(self, rollouts: MAMLRollouts) -> dict[str, float]:
        with self.timer.phase("advantages"):
            post_advantages, _ = self.advantages(rollouts.post)
        with self.timer.phase("meta_gradient"):
            metrics = self.promp.step(rollouts.inner, rollouts.post, post_advantages)
        metrics["baseline/explained_variance"] = rollouts.explained_variance
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"promp": self.promp.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.promp.load_state_dict(state["promp"])
