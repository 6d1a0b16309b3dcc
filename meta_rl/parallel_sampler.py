"""Multi-process sampler: tasks sharded over worker processes, one message per phase.

Each worker owns the sub-envs of a contiguous shard of tasks and runs the policy itself, on the
parameters it is sent once per ``sample`` call; episodes come back through one shared-memory
buffer, so nothing crosses a process boundary per step (Gymnasium's ``AsyncVectorEnv`` pipes
every step and is ~3x slower than one process on 2 cores). Workers start once, survive across
iterations and use one torch thread each.

Same seeds, same episodes as ``VectorSampler``: the parent draws the reset seeds and the torch
seed exactly as it does, and each worker samples actions from a distribution padded to the
*whole* batch (its shard's parameters in its rows) and keeps its rows. Torch's samplers consume
random numbers by position, not by value, so every row gets the number it would get in one
process.

Shutdown: ``close()`` (also called by the trainer's ``finally``, by garbage collection and at
interpreter exit); workers are daemonic (multiprocessing terminates them when the parent exits
on an exception), ignore SIGINT (Ctrl-C reaches the whole process group; the parent decides),
and on Linux get SIGTERM when the parent dies, even by SIGKILL. A worker that dies or raises
makes ``sample`` raise ``SamplerWorkerError`` naming it, after stopping the others.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
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

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

import envs  # noqa: F401  (registers the MetaRL/ families with Gymnasium)
from meta_rl.episodes import Episodes
from meta_rl.functional import Params, flatten_distribution, task_distribution
from meta_rl.perf import configure_worker, cpu_count
from meta_rl.sampler import encode_observations, observation_dim

Layout = dict[str, tuple[np.dtype, tuple[int, ...], int]]  # name -> dtype, shape, byte offset


class SamplerWorkerError(RuntimeError):
    """A sampler worker died or raised; the message names it and carries its traceback."""


def _layout(horizon: int, batch: int, obs_dim: int, action_space: spaces.Space) -> Layout:
    discrete = isinstance(action_space, spaces.Discrete)
    action_shape = () if discrete else tuple(action_space.shape)
    specs = {
        "observations": (np.float32, (horizon + 1, batch, obs_dim)),
        "actions": (np.int64 if discrete else np.float32, (horizon, batch, *action_shape)),
        "rewards": (np.float32, (horizon, batch)),
        "mask": (np.float32, (horizon, batch)),
        "terminated": (np.bool_, (horizon, batch)),
        "truncated": (np.bool_, (horizon, batch)),
        "log_probs": (np.float32, (horizon, batch)),
    }
    layout, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        layout[name] = (np.dtype(dtype), shape, offset)
        offset += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64  # 64-B aligned
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
    """Linux: SIGTERM when the parent dies (also by SIGKILL), so no worker is ever orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _pad_to_batch(leaf: torch.Tensor, num_tasks: int, offset: int) -> torch.Tensor:
    """``leaf[n, ...]`` placed at rows ``offset:offset+n`` of ``[num_tasks, ...]``; other rows
    repeat row 0, so they are valid distribution parameters whatever the family."""
    full = leaf[:1].expand(num_tasks, *leaf.shape[1:]).clone()
    full[offset : offset + len(leaf)] = leaf
    return full


def _worker_main(
    conn: Connection,
    env_id: str,
    env_kwargs: dict[str, Any],
    num_envs: int,
    episodes_per_task: int,
    buffer: Any,
    layout: Layout,
    parent_pid: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    configure_worker()
    sub_envs = [gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
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
            _, policy_bytes, params, tasks, reset_seeds, torch_seed, num_tasks, offset = message
            if policy_bytes is not None:
                policy = pickle.loads(policy_bytes)
            assert policy is not None
            params = {k: torch.from_numpy(v) for k, v in params.items()}
            end = _rollout(
                sub_envs,
                arrays,
                policy,
                params,
                tasks,
                episodes_per_task,
                reset_seeds,
                torch_seed,
                num_tasks,
                offset,
            )
            conn.send(("ok", end))
        except Exception:
            conn.send(("error", traceback.format_exc()))


@torch.no_grad()
def _rollout(
    sub_envs: list[gym.Env],
    arrays: dict[str, np.ndarray],
    policy: nn.Module,
    params: Params,
    tasks: Sequence[dict[str, Any]],
    episodes_per_task: int,
    reset_seeds: np.ndarray,
    torch_seed: int,
    num_tasks: int,
    offset: int,
) -> int:
    """``VectorSampler.sample``'s loop on one shard, written into the shared arrays.

    Returns the number of steps until the shard's episodes had all ended; actions keep being
    sampled to the horizon (cheap) so the parent can cut the batch where ``VectorSampler``
    would have stopped.
    """
    n, num_episodes = len(tasks), episodes_per_task
    lo, hi = offset * num_episodes, (offset + n) * num_episodes
    space = sub_envs[0].observation_space
    obs_dim = arrays["observations"].shape[-1]
    for array in arrays.values():
        array[:, lo:hi] = 0
    observations = arrays["observations"]
    first = []
    for i, env in enumerate(sub_envs):
        env.set_wrapper_attr("task", tasks[i // num_episodes])
        first.append(env.reset(seed=int(reset_seeds[i]))[0])
    observations[0, lo:hi] = encode_observations(space, np.stack(first))
    active = np.ones(hi - lo, dtype=bool)
    end = observations.shape[0] - 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        for t in range(observations.shape[0] - 1):
            obs = torch.from_numpy(observations[t, lo:hi]).view(n, num_episodes, obs_dim)
            dist = task_distribution(policy, params, obs, task_dim=0)
            leaves, rebuild = flatten_distribution(dist)
            padded = rebuild([_pad_to_batch(leaf, num_tasks, offset) for leaf in leaves])
            action = padded.sample()[offset : offset + n]
            arrays["log_probs"][t, lo:hi] = dist.log_prob(action).reshape(-1).numpy()
            action_np = action.reshape(hi - lo, *action.shape[2:]).numpy()
            arrays["actions"][t, lo:hi] = action_np
            if not active.any():
                continue
            idx = np.flatnonzero(active)
            next_obs = []
            for i in idx:
                obs_i, reward, term, trunc, _ = sub_envs[i].step(action_np[i])
                next_obs.append(obs_i)
                arrays["rewards"][t, lo + i] = reward
                arrays["terminated"][t, lo + i], arrays["truncated"][t, lo + i] = term, trunc
            observations[t + 1, lo + idx] = encode_observations(space, np.stack(next_obs))
            arrays["mask"][t, lo + idx] = 1.0
            active[idx] = ~(arrays["terminated"][t, lo + idx] | arrays["truncated"][t, lo + idx])
            if not active.any():
                end = t + 1
    return end


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


class ProcessSampler:
    """``VectorSampler``'s interface with the tasks sharded over ``num_workers`` processes.

    ``num_workers`` defaults to one per core (capped at the number of tasks). ``start_method``
    defaults to ``fork`` on Linux (cheap start; workers use one torch thread) and ``spawn``
    elsewhere or when CUDA is initialised in the parent.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        seed: int,
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        device: torch.device | str = "cpu",
        num_workers: int | None = None,
        start_method: str | None = None,
    ) -> None:
        self.num_tasks, self.episodes_per_task = num_tasks, episodes_per_task
        self.device = torch.device(device)
        kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self._env = gym.make(env_id, **kwargs)  # spaces and task sampling
        if self._env.spec is None or self._env.spec.max_episode_steps is None:
            raise ValueError(f"{env_id}: a task family needs a time limit (max_episode_steps)")
        self.horizon: int = self._env.spec.max_episode_steps
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.obs_dim = observation_dim(self.observation_space)
        self._rng = np.random.default_rng(seed)

        workers = max(1, min(num_workers or cpu_count(), num_tasks))
        bounds = np.linspace(0, num_tasks, workers + 1).round().astype(int)
        self.shards = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        batch = num_tasks * episodes_per_task
        self._layout = _layout(self.horizon, batch, self.obs_dim, self.action_space)
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
                        kwargs,
                        (b - a) * episodes_per_task,
                        episodes_per_task,
                        self._buffer,
                        self._layout,
                        os.getpid(),
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

    @property
    def unwrapped(self) -> gym.Env:
        return self._env.unwrapped

    def sample_tasks(self, num_tasks: int | None = None) -> list[dict[str, Any]]:
        return self.unwrapped.sample_tasks(num_tasks or self.num_tasks, self._rng)

    def rng_state(self) -> dict[str, Any]:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()
        self._env.close()

    def __enter__(self) -> ProcessSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per sub-env; ``params`` holds one parameter set per task (leading dim)."""
        if not self._finalizer.alive:
            raise SamplerWorkerError("sampler is closed")
        num_tasks, num_episodes = len(tasks), self.episodes_per_task
        if num_tasks != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        batch = num_tasks * num_episodes
        reset_seeds = self._rng.integers(2**31, size=batch)  # drawn as VectorSampler does
        torch_seed = int(self._rng.integers(2**62))
        policy_bytes = None
        if policy is not self._sent_policy:  # the module once; parameters every phase
            policy_bytes = pickle.dumps(copy.deepcopy(policy).cpu())
            self._sent_policy = policy
        host = {k: v.detach().cpu().numpy() for k, v in params.items()}
        for conn, (a, b) in zip(self._conns, self.shards, strict=True):
            shard = {k: np.ascontiguousarray(v[a:b]) for k, v in host.items()}
            seeds = reset_seeds[a * num_episodes : b * num_episodes]
            message = ("sample", policy_bytes, shard, list(tasks[a:b]), seeds, torch_seed)
            with contextlib.suppress(OSError):  # a dead worker is reported by _gather
                conn.send((*message, num_tasks, a))
        end = self._gather()

        def to_tensor(name: str) -> torch.Tensor:
            array = self._arrays[name].copy()
            if name != "observations":
                array[end:] = 0  # VectorSampler stops once every episode has ended
            shaped = array.reshape(array.shape[0], num_tasks, num_episodes, *array.shape[2:])
            return torch.from_numpy(shaped).to(self.device)

        return Episodes(**{name: to_tensor(name) for name in self._layout})

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
