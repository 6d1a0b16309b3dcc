"""What every meta-learner shares: the iteration template and its report."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from torch import nn

from meta_rl.adaptation import AdvantageEstimator
from meta_rl.episodes import Episodes
from meta_rl.samplers.base import Sampler
from meta_rl.timing import PhaseTimer, cuda_sync


class Rollouts(Protocol):
    """The data one meta-iteration collected, as far as the trainer cares."""

    @property
    def step_episodes(self) -> list[Episodes]:
        """The episodes sampled before each inner step, then after the last one."""
        ...

    @property
    def returns(self) -> list[float]:
        """Mean return before each inner step, then after the last one (index 0: pre-adapt)."""
        ...

    @property
    def env_steps(self) -> int: ...


R = TypeVar("R", bound=Rollouts)


@dataclass(frozen=True)
class IterationReport:
    """What one meta-iteration produced: returns per inner step, cost, and named metrics."""

    returns: list[float]  # index 0: pre-adaptation; last: after the last inner step
    env_steps: int
    sampling_s: float  # sampling plus the inner adaptation it needs
    optimize_s: float  # the meta-update
    metrics: dict[str, float]  # namespaced, e.g. "trpo/kl"
    # seconds per phase, measured by the learner (``self.timer``): "sampling", "cg", ...
    timings: dict[str, float] = field(default_factory=dict)
    # fraction of episodes that reached success, indexed as ``returns``; empty for a family
    # whose info has no ``success``
    success: list[float] = field(default_factory=list)


class MetaLearner(ABC, Generic[R]):
    """Template method (as in SB3's ``learn -> collect_rollouts -> train``).

    ``iteration(tasks)`` = ``collect(tasks)`` (sample episodes, adapt per task) then
    ``update(rollouts)`` (change the shared initial parameters in place). Subclasses stay thin;
    they time their phases with ``self.timer`` (``meta_rl.timing``), which syncs the GPU at
    phase boundaries when the policy is on one.
    """

    def __init__(self, policy: nn.Module, sampler: Sampler, advantages: AdvantageEstimator) -> None:
        self.policy = policy
        self.sampler = sampler
        self.advantages = advantages
        self.timer = PhaseTimer(cuda_sync(policy))

    @abstractmethod
    def collect(self, tasks: Sequence[dict[str, Any]]) -> R: ...

    @abstractmethod
    def update(self, rollouts: R) -> dict[str, float]: ...

    def iteration(self, tasks: Sequence[dict[str, Any]]) -> IterationReport:
        self.timer.take()  # phases timed outside an iteration do not count
        start = time.perf_counter()
        rollouts = self.collect(tasks)
        sampling_s = time.perf_counter() - start
        start = time.perf_counter()
        metrics = self.update(rollouts)
        optimize_s = time.perf_counter() - start
        return IterationReport(
            rollouts.returns,
            rollouts.env_steps,
            sampling_s,
            optimize_s,
            metrics,
            self.timer.take(),
            [e.success_rate() for e in rollouts.step_episodes if e.success is not None],
        )

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint (optimiser moments, schedules); the policy is saved apart."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
