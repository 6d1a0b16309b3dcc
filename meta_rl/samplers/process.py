"""Multi-process sampler: tasks sharded over worker processes, one message per phase.

Each worker owns the sub-envs of a contiguous shard of tasks and runs the policy itself, on the
parameters it is sent once per ``sample`` call; episodes come back through one shared-memory
buffer, so nothing crosses a process boundary per step (Gymnasium's ``AsyncVectorEnv`` pipes
every step, and was slower than one process on 2 cores: ``benchmarks/RESULTS.md``). Workers
start once, survive across iterations and use one torch thread each.

Same seeds, same episodes as ``VectorSampler``, for any number of workers: the shards, the
phase's share of each and the rollout of a shard are ``meta_rl.samplers.shards``, which the Ray
sampler shares.

Shutdown: ``close()`` (also called by the trainer's ``finally``, by garbage collection and at
interpreter exit); workers are daemonic (multiprocessing terminates them when the parent exits
on an exception), ignore SIGINT and SIGTERM (Ctrl-C, or a scheduler's SIGTERM, reaches the
whole process group; the parent decides and stops them), and on Linux get SIGKILL when the
parent dies, even by SIGKILL. A worker that dies or raises
makes ``sample`` raise ``SamplerWorkerError`` naming it, after stopping the others.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import torch
from torch import nn

import meta_rl.envs  # noqa: F401  (registers the MetaRL/ families with Gymnasium)
from meta_rl.episodes import Episodes
from meta_rl.functional import Params, TaskForward
from meta_rl.perf import configure_worker, cpu_count
from meta_rl.samplers.base import ActionBounds
from meta_rl.samplers.mujoco import make_env_batch
from meta_rl.samplers.shards import (
    SamplerWorkerError,
    ShardedSampler,
    sample_shard,
    shard_bounds,
)

Layout = dict[str, tuple[np.dtype, tuple[int, ...], int]]  # name -> dtype, shape, byte offset


def _layout(specs: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> Layout:
    """Byte offsets (64-byte aligned) of each episode array inside one shared buffer."""
    layout, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        layout[name] = (dtype, shape, offset)
        offset += -(-int(np.prod(shape)) * dtype.itemsize // 64) * 64
    return layout


def _views(buffer: Any, layout: Layout) -> dict[str, np.ndarray]:
    raw = np.frombuffer(buffer, dtype=np.uint8)
    return {
        name: raw[offset : offset + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        for name, (dtype, shape, offset) in layout.items()
    }


def _buffer_size(layout: Layout) -> int:
    return max(off + int(np.prod(shape)) * dt.itemsize for dt, shape, off in layout.values())


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL when the parent dies (also by SIGKILL), so no worker is ever orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(
    conn: Connection,
    env_id: str,
    env_kwargs: dict[str, Any],
    env_backend: str,
    num_envs: int,
    episodes_per_task: int,
    buffer: Any,
    layout: Layout,
    parent_pid: int,
    task_forward: TaskForward,
    clip_to: ActionBounds | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    configure_worker()
    sub_envs = make_env_batch(env_backend, env_id, num_envs, env_kwargs)
    arrays = _views(buffer, layout)
    policy: nn.Module | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "close":
            return
        try:
            _, policy_bytes, phase = message
            if policy_bytes is not None:
                policy = pickle.loads(policy_bytes)
            assert policy is not None
            first_row = phase.offset * episodes_per_task
            end = sample_shard(sub_envs, arrays, first_row, policy, phase, task_forward, clip_to)
            conn.send(("ok", end))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def _shutdown(processes: list[Any], conns: list[Connection]) -> None:
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("close",))
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in conns:
        conn.close()


class ProcessSampler(ShardedSampler):
    """``VectorSampler``'s interface with the tasks sharded over ``num_workers`` processes.

    ``num_workers`` defaults to one per core (capped at the number of tasks). ``env_backend``
    ``"mujoco"`` has each worker step its shard as one ``MuJoCoBatch`` (one thread) instead of
    Gymnasium envs (``"gym"``), with the same episodes. ``start_method``
    defaults to ``fork`` on Linux (cheap start; workers use one torch thread) and ``spawn``
    elsewhere or when CUDA is initialised in the parent.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        num_workers: int | None = None,
        start_method: str | None = None,
        env_backend: str = "gym",
        **kwargs: Any,
    ) -> None:
        super().__init__(env_id, num_tasks, episodes_per_task, **kwargs)
        if env_backend == "mujoco":  # refuse an unsupported family here, not in every worker
            from meta_rl.samplers.mujoco import check_batchable

            check_batchable(self._env)
        self.shards = shard_bounds(num_tasks, num_workers or cpu_count())
        self._layout = _layout(self.array_specs())
        if start_method is None:
            fork_ok = "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()
            start_method = "fork" if fork_ok else "spawn"
        ctx = mp.get_context(start_method)
        self._buffer = ctx.RawArray(ctypes.c_uint8, _buffer_size(self._layout))
        self._arrays = _views(self._buffer, self._layout)
        self._processes, self._conns = [], []
        try:
            for index, (a, b) in enumerate(self.shards):
                parent_end, child_end = ctx.Pipe()
                process = ctx.Process(
                    target=_worker_main,
                    name=f"meta-rl-sampler-{index}",
                    args=(
                        child_end,
                        env_id,
                        self.env_kwargs,
                        env_backend,
                        (b - a) * episodes_per_task,
                        episodes_per_task,
                        self._buffer,
                        self._layout,
                        os.getpid(),
                        self.task_forward,
                        self.clip_to,
                    ),
                    daemon=True,
                )
                process.start()
                child_end.close()
                self._processes.append(process)
                self._conns.append(parent_end)
        except BaseException:
            _shutdown(self._processes, self._conns)
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)
        self._sent_policy: nn.Module | None = None

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per sub-env; ``params`` holds one parameter set per task (leading dim)."""
        phases = self._split(params, tasks)
        policy_bytes = None
        if policy is not self._sent_policy:  # the module once; parameters every phase
            policy_bytes = pickle.dumps(copy.deepcopy(policy).cpu())
            self._sent_policy = policy
        for conn, phase in zip(self._conns, phases, strict=True):
            with contextlib.suppress(OSError):  # a dead worker is reported by _gather
                conn.send(("sample", policy_bytes, phase))
        end = self._gather()
        return self._episodes({name: a.copy() for name, a in self._arrays.items()}, end, tasks)

    def _gather(self) -> int:
        """Wait for every worker's reply; a dead or failed worker stops them all and raises."""
        pending = dict(enumerate(self._conns))
        end = 0
        while pending:
            sentinels = {self._processes[i].sentinel: i for i in pending}
            for ready in wait([*pending.values(), *sentinels]):
                index = sentinels[ready] if ready in sentinels else self._conns.index(ready)
                if index not in pending:
                    continue
                try:
                    if not pending[index].poll():  # the sentinel fired with no reply waiting
                        raise EOFError
                    status, value = pending[index].recv()
                except (EOFError, OSError):
                    process = self._processes[index]
                    process.join(timeout=1)
                    self.close()
                    raise SamplerWorkerError(
                        f"sampler worker {index} (pid {process.pid}) died with exit code "
                        f"{process.exitcode} while sampling; all workers stopped"
                    ) from None
                del pending[index]
                if status == "error":
                    self.close()
                    raise SamplerWorkerError(f"sampler worker {index} raised:\n{value}")
                end = max(end, value)
        return end
