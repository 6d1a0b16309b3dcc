"""Wall time per phase of a meta-iteration, measured by the code that does the work.

A learner wraps each phase of its iteration in ``timer.phase(name)`` (MAML-TRPO: ``sampling``,
``advantages``, ``adaptation``, ``meta_gradient``, ``cg``, ``line_search``); the iteration's
report carries the totals (``IterationReport.timings``) and ``benchmarks iteration`` prints
them. Nothing outside the learner needs to know which function does what.

On a GPU, work is queued and wall time lands in whichever phase first waits for it; a timer
with a ``sync`` (``torch.cuda.synchronize``) waits for queued work at every phase boundary so
each phase is charged its own kernels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class PhaseTimer:
    """Seconds per named phase, summed over every entry since the last ``take``."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self._totals: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to phase ``name`` (phases do not nest)."""
        if self.sync is not None:
            self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self._totals[name] = self._totals.get(name, 0.0) + time.perf_counter() - start

    def take(self) -> dict[str, float]:
        """The totals so far, and start again from zero."""
        totals, self._totals = self._totals, {}
        return totals


def cuda_sync(module: nn.Module) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when ``module``'s parameters are on a GPU, else None."""
    on_gpu = any(p.device.type == "cuda" for p in module.parameters())
    return torch.cuda.synchronize if on_gpu else None
