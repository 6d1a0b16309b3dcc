"""Non-finite values stop training where they enter, in one line naming what and where.

A NaN reward does not fail where it appears: it flows into the baseline fit, the advantages
and the meta-gradient, and surfaces minutes later as a failed linear solve or a policy full of
NaNs that then gets checkpointed. So the samplers check the episodes they return (rewards and
observations), the trainer checks each iteration's losses and the parameters the update
proposed, and the first NaN or infinity raises ``NonFiniteError`` before anything of that
iteration is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from meta_rl.episodes import Episodes

MAY_BE_NAN = frozenset({"baseline/explained_variance"})
"""Metrics that are NaN by definition in some iterations (constant returns), not a fault."""


class NonFiniteError(ArithmeticError):
    """A NaN or infinity in ``quantity``; ``str(err)`` is one line."""

    def __init__(self, quantity: str, where: str = "", iteration: int | None = None) -> None:
        self.quantity, self.where, self.iteration = quantity, where, iteration
        at = f"iteration {iteration}: " if iteration is not None else ""
        super().__init__(f"{at}non-finite {quantity}{f' {where}' if where else ''}")

    def at(self, iteration: int) -> NonFiniteError:
        """The same error, naming the iteration it happened in."""
        return NonFiniteError(self.quantity, self.where, iteration)


def check_episodes(episodes: Episodes, tasks: Sequence[Mapping[str, Any]]) -> Episodes:
    """``episodes`` unchanged if every reward and observation is finite; else the first task."""
    for quantity, values in (("reward", episodes.rewards), ("observation", episodes.observations)):
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            per_task = finite.transpose(0, 1).reshape(values.shape[1], -1).all(dim=1)
            task = int((~per_task).nonzero()[0, 0])
            raise NonFiniteError(quantity, f"in task {task} {dict(tasks[task])}")
    return episodes


def check_metrics(metrics: Mapping[str, float]) -> None:
    """Losses, KL, gradient norms and returns of an iteration must be finite."""
    for key, value in metrics.items():
        if key not in MAY_BE_NAN and not math.isfinite(value):
            raise NonFiniteError(key, f"= {value}")


def check_parameters(module: nn.Module) -> None:
    """The parameters an update proposed (about to be checkpointed) must be finite."""
    for name, value in module.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteError("policy parameters", f"({name})")
