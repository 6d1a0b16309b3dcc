"""Reptile (Nichol et al. 2018): k plain optimiser steps per task, then move theta toward them.

``theta <- theta + eps * mean_i(theta_i' - theta)``, where ``theta_i'`` is what k inner updates
on task i reach from ``theta``. No gradient flows through the inner loop, so the inner learner
can be anything that maps parameters to parameters: our batched policy gradient or PPO, an SB3
algorithm (``TaskLearner``), or SGD on a regression loss (experiments/sine_reptile.py).

Batched inner loop: per-task parameters are leaf tensors with a leading task dim N, and one
torch optimiser over those stacked leaves IS N independent per-task optimisers (SGD and Adam
update elementwise; Adam's moments are elementwise), so all tasks take each inner step together
and the sampler runs the policy once per time step for the whole meta-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from meta_rl.adaptation import AdvantageEstimator, inner_loss
from meta_rl.agents.pg import ppo_clip_loss
from meta_rl.algorithms.base import MetaLearner
from meta_rl.algorithms.settings import ReptileSettings
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import Params, policy_params, task_log_probs
from meta_rl.samplers.base import Sampler

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}


class Reptile:
    """Reptile's math on any module's parameters; it never sees where inner losses come from.

    ``task_params(N)`` -> per-task leaf copies of theta, ``inner_optimizer`` over them,
    ``inner_step`` with per-task losses ``[N]``, and ``meta_step(adapted)`` moves the module's
    parameters in place. The eps schedule position and the outer optimiser's moments are in
    ``state_dict`` so a resumed run continues exactly.
    """

    def __init__(self, module: nn.Module, settings: ReptileSettings) -> None:
        if settings.outer_anneal_iterations is None:
            raise ValueError(
                "outer_anneal_iterations is null: set the eps schedule's length "
                "(the trainer uses train.iterations)"
            )
        self.module = module
        self.settings = settings
        self.updates = 0
        self.outer: torch.optim.Optimizer | None = None
        if settings.outer_optimizer != "none":
            self.outer = OPTIMIZERS[settings.outer_optimizer](
                policy_params(module).values(), lr=settings.outer_lr
            )

    def epsilon(self, updates: int | None = None) -> float:
        """eps after ``updates`` meta-updates: linear from outer_lr to outer_lr_final, then flat."""
        s = self.settings
        done = min((self.updates if updates is None else updates) / s.outer_anneal_iterations, 1.0)
        return (1.0 - done) * s.outer_lr + done * s.outer_lr_final

    def task_params(self, num_tasks: int) -> Params:
        """Independent leaf copies of theta, one per task (leading dim ``num_tasks``)."""
        return {
            name: p.detach().unsqueeze(0).repeat(num_tasks, *([1] * p.dim())).requires_grad_(True)
            for name, p in policy_params(self.module).items()
        }

    def inner_optimizer(self, params: Params) -> torch.optim.Optimizer:
        """One optimiser over the stacked per-task leaves: N independent optimisers in one."""
        s = self.settings
        return OPTIMIZERS[s.inner_optimizer](params.values(), lr=s.inner_lr)

    @staticmethod
    def inner_step(optimizer: torch.optim.Optimizer, params: Params, losses: Tensor) -> None:
        """One update of every task's parameters on its own loss (``losses`` is ``[N]``).

        The tasks' parameters are separate slices, so the gradient of the sum w.r.t. slice i is
        the gradient of task i's loss alone.
        """
        optimizer.zero_grad(set_to_none=True)
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        for p, g in zip(params.values(), grads, strict=True):
            p.grad = g
        optimizer.step()

    @torch.no_grad()
    def meta_step(self, adapted: Params) -> dict[str, float]:
        """``theta += eps * mean_i(theta_i' - theta)``, or an outer-optimiser step on its negative.

        With an outer optimiser, ``theta - mean_i(theta_i')`` is handed to it as the gradient and
        its learning rate follows the eps schedule (as Nichol et al. do with Adam); outer SGD
        without momentum is then exactly the interpolation.
        """
        eps = self.epsilon()
        theta = policy_params(self.module)
        pseudo = {name: p - adapted[name].detach().mean(dim=0) for name, p in theta.items()}
        if self.outer is None:
            for name, p in theta.items():
                p.sub_(eps * pseudo[name])
        else:
            for group in self.outer.param_groups:
                group["lr"] = eps
            for name, p in theta.items():
                p.grad = pseudo[name].clone()
            self.outer.step()
            self.outer.zero_grad(set_to_none=True)
        self.updates += 1
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in pseudo.values()))
        return {"reptile/epsilon": eps, "reptile/pseudo_grad_norm": float(norm)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "outer_optimizer": None if self.outer is None else self.outer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        if self.outer is not None:
            self.outer.load_state_dict(state["outer_optimizer"])


class TaskLearner(Protocol):
    """An inner learner that trains on one task at a time (``meta_rl.agents.sb3.SB3InnerLearner``).

    ``learn(params, task)`` starts from ``params`` (shared theta, no task dim) and returns the
    adapted parameters and the environment steps it used.
    """

    def learn(self, params: Params, task: dict[str, Any]) -> tuple[Params, int]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ReptileRollouts:
    """Episodes sampled before each inner step and after the last one, and where tasks ended."""

    batches: list[Episodes]  # batches[k]: sampled with the parameters after k inner steps
    adapted: Params  # theta_i', leading task dim
    inner_env_steps: int  # steps an external TaskLearner used (not in batches)
    explained_variance: float

    @property
    def step_episodes(self) -> list[Episodes]:
        return self.batches

    @property
    def returns(self) -> list[float]:
        return [episodes.mean_return() for episodes in self.batches]

    @property
    def env_steps(self) -> int:
        return sum(episodes.num_steps for episodes in self.batches) + self.inner_env_steps


class ReptileLearner(MetaLearner[ReptileRollouts]):
    """Reptile for RL in the trainer.

    Each of the ``num_inner_steps`` updates samples fresh episodes of every task with that
    task's current parameters (all tasks in one batched ``sampler.sample``), then takes one
    REINFORCE step or ``ppo_epochs`` full-batch PPO epochs with the per-task optimiser. One more
    batch is sampled with theta_i' to report the post-adaptation return (it is counted in
    ``env_steps``; Reptile itself does not need it). With a ``TaskLearner`` (SB3) the inner loop
    runs task by task in that learner instead, and the batched sampler only measures returns
    before and after.
    """

    def __init__(
        self,
        policy: nn.Module,
        sampler: Sampler,
        advantages: AdvantageEstimator,
        settings: ReptileSettings,
        task_learner: TaskLearner | None = None,
    ) -> None:
        super().__init__(policy, sampler, advantages)
        self.reptile = Reptile(policy, settings)
        self.num_inner_steps = settings.num_inner_steps
        self.inner_loss = settings.inner_loss
        self.ppo_epochs = settings.ppo_epochs if settings.inner_loss == "ppo" else 1
        self.ppo_clip = settings.ppo_clip
        self.task_learner = task_learner

    def task_losses(self, params: Params, batch: InnerBatch) -> Tensor:
        """Per-task inner objective ``[N]`` of per-task ``params`` on the batch."""
        if self.inner_loss == "reinforce":
            return inner_loss(self.policy, params, batch)
        episodes = batch.episodes
        log_probs = task_log_probs(
            self.policy, params, episodes.observations[:-1], episodes.actions, task_dim=1
        )
        return ppo_clip_loss(
            log_probs, episodes.log_probs, batch.advantages, episodes.mask, self.ppo_clip
        )

    def collect(self, tasks: Sequence[dict[str, Any]]) -> ReptileRollouts:
        if self.task_learner is not None:
            return self._collect_external(tasks)
        params = self.reptile.task_params(len(tasks))
        optimizer = self.reptile.inner_optimizer(params)
        batches: list[Episodes] = []
        explained = 0.0
        timer = self.timer
        for _ in range(self.num_inner_steps):
            with timer.phase("sampling"):
                episodes = self.sampler.sample(self.policy, params, tasks)
            with timer.phase("advantages"):
                advantages, ev = self.advantages(episodes)
            explained += ev / self.num_inner_steps
            batch = InnerBatch(episodes, advantages)
            with timer.phase("adaptation"):
                for _ in range(self.ppo_epochs):
                    self.reptile.inner_step(optimizer, params, self.task_losses(params, batch))
            batches.append(episodes)
        with timer.phase("sampling"):
            batches.append(self.sampler.sample(self.policy, params, tasks))
        adapted = {k: v.detach() for k, v in params.items()}
        return ReptileRollouts(batches, adapted, 0, explained)

    def _collect_external(self, tasks: Sequence[dict[str, Any]]) -> ReptileRollouts:
        assert self.task_learner is not None
        timer = self.timer
        theta = {k: v.detach() for k, v in policy_params(self.policy).items()}
        with timer.phase("sampling"):
            before = self.sampler.sample(self.policy, self.reptile.task_params(len(tasks)), tasks)
        with timer.phase("adaptation"):  # the external learner samples as it trains
            results = [self.task_learner.learn(theta, task) for task in tasks]
        adapted = {k: torch.stack([params[k] for params, _ in results]) for k in theta}
        with timer.phase("sampling"):
            after = self.sampler.sample(self.policy, adapted, tasks)
        inner_steps = sum(steps for _, steps in results)
        return ReptileRollouts([before, after], adapted, inner_steps, float("nan"))

    def update(self, rollouts: ReptileRollouts) -> dict[str, float]:
        with self.timer.phase("meta_gradient"):  # theta - theta_i', and the outer step
            metrics = self.reptile.meta_step(rollouts.adapted)
        if self.task_learner is None:
            metrics["baseline/explained_variance"] = rollouts.explained_variance
        return metrics

    def state_dict(self) -> dict[str, Any]:
        state = {"reptile": self.reptile.state_dict()}
        if self.task_learner is not None:
            state["task_learner"] = self.task_learner.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reptile.load_state_dict(state["reptile"])
        if self.task_learner is not None:
            self.task_learner.load_state_dict(state["task_learner"])
