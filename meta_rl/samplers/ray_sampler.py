"""Ray sampler: the process sampler's shards on Ray actors, on this machine or on a cluster.

Each actor owns the sub-envs of one fixed shard of the meta-batch (created once, re-tasked
every phase) and runs the policy itself on one torch thread, exactly as a ``ProcessSampler``
worker does (``meta_rl.samplers.shards``): one remote call per actor and phase, the policy
module put in the object store once, each shard's parameters and seeds shipped with its call,
its episode arrays back as the call's result. No per-step round trips. Same seeds, same
episodes as ``VectorSampler`` and ``ProcessSampler``, for any number of actors.

Faults: an actor whose process or node dies while sampling is replaced by a new one and its
shard re-sampled from the same ``ShardPhase`` (same seeds, so the same rows); one warning line
names the actor and the cause. A Python exception inside an actor is a bug, not a fault:
``SamplerWorkerError`` with its traceback.

Where Ray runs: ``address=None`` starts a private Ray on this machine with ``num_workers`` CPUs,
every Ray server on 127.0.0.1 (Ray's own "no cluster" mode), no dashboard, token
authentication with a token that lives only in this process's environment (nothing written to
``~/.ray``), stopped by ``close``. ``"auto"`` or ``"host:port"`` joins a cluster started with
``ray start`` (README, "Running on a cluster"); one that cannot be reached is a
``RayClusterError`` before any env is built. A Ray already initialised in this process (a
script's own ``ray.init``) is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import os
import secrets
import socket
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from torch import nn

from meta_rl.episodes import Episodes
from meta_rl.functional import Params, TaskForward
from meta_rl.perf import configure_worker, cpu_count
from meta_rl.samplers.base import ActionBounds, episode_array_specs
from meta_rl.samplers.shards import (
    SamplerWorkerError,
    ShardedSampler,
    ShardPhase,
    sample_shard,
    shard_bounds,
)

RAY_EXTRA = "pip install 'meta-rl[ray]'"
logger = logging.getLogger(__name__)


class RayClusterError(RuntimeError):
    """Ray could not be started or the cluster at ``train.ray_address`` cannot be reached."""


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray on Linux replaces 127.0.0.1 by the machine's routable address unless told there is
    no cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported); with the
    node address 127.0.0.1 every Ray server listens on loopback only."""
    from ray._private import ray_constants

    previous = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag
        if previous is None:
            del os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR]
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = previous


def start_local_ray(num_cpus: int) -> None:
    """A private single-node Ray on 127.0.0.1 with ``num_cpus`` CPUs, no dashboard."""
    import ray

    # token auth without Ray's default of writing a token to ~/.ray: ours is in the env only
    # (inherited by the Ray processes); Config.initialize re-reads the mode, as Ray does
    if "RAY_AUTH_TOKEN" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        ray._raylet.Config.initialize("")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with _loopback_only():
        ray.init(
            address="local",  # a new instance, never one found in RAY_ADDRESS or /tmp/ray
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            _node_ip_address="127.0.0.1",
        )


def _reachable(address: str, timeout_s: float) -> str | None:
    """Why ``host:port`` takes no TCP connection within ``timeout_s``, None when it does."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "not host:port or auto"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{exc.strerror or exc}"


def connect(address: str | None, num_cpus: int, timeout_s: float = 10.0) -> bool:
    """Make sure this process is connected to Ray; True when this call started it.

    ``None`` starts a private local Ray; ``"auto"`` or ``"host:port"`` joins a cluster. A
    cluster that cannot be reached raises ``RayClusterError`` within about ``timeout_s``.
    """
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        try:
            start_local_ray(num_cpus)
        except Exception as exc:
            raise RayClusterError(f"could not start a local Ray: {_one_line(exc)}") from exc
        return True
    where = f"train.ray_address: cannot reach the Ray cluster at {address!r}"
    if address != "auto":
        why = _reachable(address, timeout_s)
        if why is not None:
            raise RayClusterError(f"{where} ({why})")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, a refused token, a version mismatch, ...
        raise RayClusterError(f"{where}: {_one_line(exc)}") from exc
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


class ShardActor:
    """One shard's sub-envs and the policy, in a Ray actor (the Ray class is ``_actor_class``)."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        env_backend: str,
        num_envs: int,
        horizon: int,
        obs_dim: int,
        action_space: spaces.Space,
        task_forward: TaskForward,
        clip_to: ActionBounds | None,
        success: bool,
    ) -> None:
        from meta_rl.samplers.mujoco import make_env_batch

        configure_worker()
        self.envs = make_env_batch(env_backend, env_id, num_envs, env_kwargs)
        specs = episode_array_specs(horizon, num_envs, obs_dim, action_space, success)
        self.arrays = {name: np.zeros(shape, dtype) for name, (dtype, shape) in specs.items()}
        self.task_forward, self.clip_to = task_forward, clip_to
        self.policy: nn.Module | None = None
        self.policy_version = -1

    def where(self) -> tuple[int, str]:
        """This actor's process id and node address, for messages."""
        import ray

        return os.getpid(), ray.util.get_node_ip_address()

    def sample(self, policy_version: int, policy_box: list[Any], phase: ShardPhase) -> Any:
        """The shard's episodes of one phase: ``(end, arrays)``. ``policy_box`` holds the
        policy's object ref unresolved, so it is fetched only when its version changed."""
        if policy_version != self.policy_version:
            import ray

            self.policy, self.policy_version = ray.get(policy_box[0]), policy_version
        assert self.policy is not None
        end = sample_shard(
            self.envs, self.arrays, 0, self.policy, phase, self.task_forward, self.clip_to
        )
        return end, self.arrays


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ShardActor)


def _stop(actors: list[Any], owns_ray: bool) -> None:
    import ray

    if not ray.is_initialized():
        return
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)
    actors.clear()
    if owns_ray:
        ray.shutdown()


class RaySampler(ShardedSampler):
    """``ProcessSampler``'s interface with the shards on ``num_workers`` Ray actors.

    ``address``: None starts a private local Ray with ``num_workers`` CPUs (default: one per
    core); ``"auto"`` or ``"host:port"`` joins a running cluster, whose actors are spread over
    its nodes. ``max_restarts`` bounds the actors replaced within one ``sample`` call (a fault
    that keeps killing actors ends the run instead of looping). ``env_backend`` as for
    ``ProcessSampler``.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        num_workers: int | None = None,
        address: str | None = None,
        env_backend: str = "gym",
        max_restarts: int = 3,
        connect_timeout_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        import ray

        workers = num_workers or cpu_count()
        owns_ray = connect(address, workers, connect_timeout_s)  # before any env is built
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < min(workers, num_tasks):  # the actors would wait for CPUs forever
            if owns_ray:
                ray.shutdown()
            raise RayClusterError(
                f"train.num_workers: {workers} actors need as many CPUs, the Ray cluster has {cpus}"
            )
        self._actors: list[Any] = []
        self._finalizer = weakref.finalize(self, _stop, self._actors, owns_ray)
        try:
            super().__init__(env_id, num_tasks, episodes_per_task, **kwargs)
            if env_backend == "mujoco":
                from meta_rl.samplers.mujoco import check_batchable

                check_batchable(self._env)
            self.shards = shard_bounds(num_tasks, workers)
            self.env_backend, self.max_restarts = env_backend, max_restarts
            self._actors.extend(self._start_actor(i) for i in range(len(self.shards)))
            self._places = [self._where(i) for i in range(len(self.shards))]
        except BaseException:
            self._finalizer()
            raise
        self._policy_ref: Any = None
        self._sent_policy: nn.Module | None = None
        self._policy_version = 0
        self.restarts = 0  # actors replaced since the sampler was built

    def _start_actor(self, index: int) -> Any:
        a, b = self.shards[index]
        return (
            _actor_class()
            .options(name=None, scheduling_strategy="SPREAD")
            .remote(
                self.env_id,
                self.env_kwargs,
                self.env_backend,
                (b - a) * self.episodes_per_task,
                self.horizon,
                self.obs_dim,
                self.action_space,
                self.task_forward,
                self.clip_to,
                self.tracks_success,
            )
        )

    def _where(self, index: int) -> tuple[int, str]:
        """Waits for the actor to be up (its construction errors surface here)."""
        import ray

        try:
            return ray.get(self._actors[index].where.remote())
        except ray.exceptions.RayError as exc:
            raise SamplerWorkerError(f"ray sampler actor {index} failed to start: {exc}") from exc

    @property
    def actors(self) -> list[Any]:
        """The live actor handles, one per shard (e.g. for ``ray.kill`` in a test)."""
        return list(self._actors)

    @property
    def worker_pids(self) -> list[int]:
        return [pid for pid, _ in self._places]

    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per sub-env; ``params`` holds one parameter set per task (leading dim)."""
        import ray

        phases = self._split(params, tasks)
        if policy is not self._sent_policy:  # the module once; parameters every phase
            self._policy_ref = ray.put(copy.deepcopy(policy).cpu())
            self._sent_policy, self._policy_version = policy, self._policy_version + 1
        pending = {self._submit(i, phase): (i, phase) for i, phase in enumerate(phases)}
        parts, end, restarts = [], 0, itertools.count(1)
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            index, phase = pending.pop(ready)
            try:
                shard_end, arrays = ray.get(ready)
            except ray.exceptions.RayActorError as exc:  # the process or its node died
                if next(restarts) > self.max_restarts:
                    self.close()
                    raise SamplerWorkerError(
                        f"ray sampler: more than {self.max_restarts} actors died in one "
                        f"phase; the last, actor {index}: {_one_line(exc)}"
                    ) from exc
                self._replace(index, exc)
                pending[self._submit(index, phase)] = (index, phase)
                continue
            except ray.exceptions.RayError as exc:  # an exception inside the actor: a bug
                self.close()
                raise SamplerWorkerError(f"ray sampler actor {index} raised:\n{exc}") from exc
            parts.append((phase.offset * self.episodes_per_task, arrays))
            end = max(end, shard_end)
        return self._episodes(self.empty_arrays(), end, tasks, parts)

    def _submit(self, index: int, phase: ShardPhase) -> Any:
        actor = self._actors[index]
        return actor.sample.remote(self._policy_version, [self._policy_ref], phase)

    def _replace(self, index: int, exc: BaseException) -> None:
        """A new actor for shard ``index``; one warning line with the old one and the cause."""
        pid, node = self._places[index]
        cause = getattr(exc, "error_msg", None) or str(exc)
        self._actors[index] = self._start_actor(index)
        self._places[index] = self._where(index)
        self.restarts += 1
        a, b = self.shards[index]
        logger.warning(
            "ray sampler: actor %d (pid %d on %s, tasks %d-%d) died while sampling: %s; "
            "replaced by pid %d, its shard re-sampled from the same seeds",
            index,
            pid,
            node,
            a,
            b - 1,
            _one_line(cause).split(". ")[0],
            self._places[index][0],
        )
