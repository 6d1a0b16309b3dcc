"""A batch of trajectories for several tasks, stored as dense time-major tensors.

``Episodes`` is what a sampler returns; ``InnerBatch`` pairs one with its advantages, the data
of one inner policy-gradient step. Both sit here, below everything that uses them (inner loop,
closed form, meta-learners), so that none of those imports another to get them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class Episodes:
    """Trajectories shaped ``[T, tasks, episodes, ...]`` with a validity mask.

    Dense tensors (rather than lists of per-step dicts) keep every loss a handful of vectorised
    ops. Episodes have variable length (Ant falls over, Navigation2D stops at the goal), so
    ``mask`` marks valid steps. ``observations`` has one more time step than the rest: the
    observation after the last valid step of each episode, needed to bootstrap a value on
    truncation.
    """

    observations: torch.Tensor  # [T+1, N, E, obs_dim] float
    actions: torch.Tensor  # [T, N, E, act_dim] float, or [T, N, E] long for discrete actions
    rewards: torch.Tensor  # [T, N, E]
    mask: torch.Tensor  # [T, N, E] float, 1.0 on valid steps
    terminated: torch.Tensor  # [T, N, E] bool, true where the episode terminated
    truncated: torch.Tensor  # [T, N, E] bool, true where the time limit cut the episode
    log_probs: torch.Tensor  # [T, N, E] log-probability under the sampling policy (detached)
    # [T, N, E] bool: the step's info["success"], for families that report it (Meta-World)
    success: torch.Tensor | None = None

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    @property
    def num_steps(self) -> int:
        """Number of valid environment steps in the batch."""
        return int(self.mask.sum().item())

    @property
    def lengths(self) -> torch.Tensor:
        """Episode lengths ``[N, E]``."""
        return self.mask.sum(dim=0).long()

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of every episode, ``[N, E]``."""
        return (self.rewards * self.mask).sum(dim=0)

    def mean_return(self) -> float:
        """Mean undiscounted episode return over all tasks and episodes."""
        return self.episode_returns().mean().item()

    def task_success(self) -> torch.Tensor:
        """Per task ``[N]``: the fraction of its episodes that reached success at any valid step
        (Meta-World's success rate: its evaluation ends an episode at the first success)."""
        if self.success is None:
            raise ValueError("these episodes carry no success: the family reports none")
        reached = (self.success & (self.mask > 0)).any(dim=0)
        return reached.double().mean(dim=1)

    def success_rate(self) -> float:
        """Fraction of all episodes that reached success (``task_success`` averaged)."""
        return self.task_success().mean().item()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by field name (without ``success`` when the family reports none)."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Episodes:
        """The same episodes with ``fn`` applied to every tensor."""
        return Episodes(**{name: fn(tensor) for name, tensor in self.tensors().items()})

    def to(self, device: torch.device | str) -> Episodes:
        return self.apply(lambda tensor: tensor.to(device))


@dataclass(frozen=True)
class InnerBatch:
    """Episodes of one inner step with their (fixed, detached) advantages ``[T, N, E]``."""

    episodes: Episodes
    advantages: torch.Tensor
