"""What the sharded samplers share: the shard layout, a phase's share per shard, a shard's
rollout, the merge of the shards' rows back into one batch, and ``ShardedSampler`` around them.

``ProcessSampler`` (worker processes on this machine) and ``RaySampler`` (Ray actors, possibly
on other machines) split a meta-batch the same way: worker ``i`` owns the sub-envs of a fixed,
contiguous run of tasks. Each phase the parent draws the reset seeds and the torch seed exactly
as ``VectorSampler`` does and hands every shard its slice (``split_phase``); the worker runs
the policy, the draw and the log-probabilities on the *whole* batch's shapes, its shard's
observations and parameters in their rows, and keeps its rows (``base.WholeBatch``), so every
row gets the bits it would get in one process, for any number of shards. A shard re-sampled
from the same ``ShardPhase`` (an actor restarted after a crash) gives bitwise the same rows.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from meta_rl.episodes import Episodes
from meta_rl.finite import check_episodes
from meta_rl.functional import Params, TaskForward, shared_params
from meta_rl.samplers.base import (
    ActionBounds,
    EnvBatch,
    EpisodeArrays,
    Sampler,
    WholeBatch,
    arrays_to_episodes,
    rollout,
)


class SamplerWorkerError(RuntimeError):
    """A sampler worker died or raised; the message names it and carries its traceback."""


def shard_bounds(num_tasks: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous task ranges ``[a, b)``, as even as possible, one per worker (at most one
    worker per task)."""
    workers = max(1, min(num_workers, num_tasks))
    bounds = np.linspace(0, num_tasks, workers + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class ShardPhase:
    """One shard's share of a sampling phase: plain arrays and lists, cheap to pickle."""

    params: dict[str, np.ndarray]  # the shard's tasks' parameter sets (leading dim: task)
    tasks: list[dict[str, Any]]
    reset_seeds: np.ndarray  # one per sub-env of the shard
    torch_seed: int
    num_tasks: int  # of the whole meta-batch
    offset: int  # the shard's first task in the whole meta-batch
    per_task: bool = True  # the whole batch's tasks hold parameter sets of their own


def split_phase(
    params: dict[str, np.ndarray],
    tasks: Sequence[dict[str, Any]],
    reset_seeds: np.ndarray,
    torch_seed: int,
    shards: Sequence[tuple[int, int]],
    episodes_per_task: int,
) -> list[ShardPhase]:
    """Every shard's ``ShardPhase`` from the whole phase's parameters (host arrays) and seeds."""
    per_task = shared_params({k: torch.from_numpy(v) for k, v in params.items()}) is None
    return [
        ShardPhase(
            {k: np.ascontiguousarray(v[a:b]) for k, v in params.items()},
            list(tasks[a:b]),
            reset_seeds[a * episodes_per_task : b * episodes_per_task],
            torch_seed,
            len(tasks),
            a,
            per_task,
        )
        for a, b in shards
    ]


def _tensor(array: np.ndarray) -> torch.Tensor:
    # arrays from Ray's object store are read-only views; torch wants to own writable memory
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def sample_shard(
    sub_envs: EnvBatch,
    arrays: EpisodeArrays,
    first_row: int,
    policy: nn.Module,
    phase: ShardPhase,
    task_forward: TaskForward,
    clip_to: ActionBounds | None,
) -> int:
    """One episode per sub-env of the shard into rows ``first_row:``; runs to the horizon
    (the parent cuts at the batch's last step, ``merge_shards``). Returns the shard's end."""
    return rollout(
        sub_envs,
        arrays,
        first_row,
        policy,
        {k: _tensor(v) for k, v in phase.params.items()},
        phase.tasks,
        phase.reset_seeds,
        phase.torch_seed,
        device=torch.device("cpu"),
        whole_batch=WholeBatch(phase.num_tasks, phase.offset, phase.per_task),
        stop_when_done=False,
        task_forward=task_forward,
        clip_to=clip_to,
    )


def merge_shards(
    arrays: EpisodeArrays,
    end: int,
    parts: Sequence[tuple[int, EpisodeArrays]] = (),
) -> EpisodeArrays:
    """The batch's arrays: ``arrays`` with each ``(first_row, shard_arrays)`` of ``parts``
    written at its rows, and everything but observations zeroed from step ``end`` on
    (``VectorSampler`` stops drawing actions once every episode has ended)."""
    for first_row, part in parts:
        for name, array in part.items():
            arrays[name][:, first_row : first_row + array.shape[1]] = array
    for name, array in arrays.items():
        if name != "observations":
            array[end:] = 0
    return arrays


S = TypeVar("S", bound="ShardedSampler")


class ShardedSampler(Sampler):
    """A sampler whose workers each own one of ``shards``; subclasses start the workers, set
    ``_finalizer`` (stops them) and send each phase's ``ShardPhase`` list (``_split``) out."""

    shards: list[tuple[int, int]]
    _finalizer: weakref.finalize

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()
        super().close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _split(self, params: Params, tasks: Sequence[dict[str, Any]]) -> list[ShardPhase]:
        """This phase's seeds (drawn as ``VectorSampler`` draws them) and parameters, per shard."""
        if not self._finalizer.alive:
            raise SamplerWorkerError("sampler is closed")
        reset_seeds, torch_seed = self.phase_seeds(tasks)
        host = {k: v.detach().cpu().numpy() for k, v in params.items()}
        return split_phase(
            host, tasks, reset_seeds, torch_seed, self.shards, self.episodes_per_task
        )

    def _episodes(
        self,
        arrays: EpisodeArrays,
        end: int,
        tasks: Sequence[dict[str, Any]],
        parts: Sequence[tuple[int, EpisodeArrays]] = (),
    ) -> Episodes:
        """The phase's ``Episodes`` from the merged arrays (``merge_shards``), checked."""
        arrays = merge_shards(arrays, end, parts)
        episodes = arrays_to_episodes(arrays, self.num_tasks, self.episodes_per_task, self.device)
        return check_episodes(episodes, tasks)
