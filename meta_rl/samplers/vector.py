"""In-process samplers: all sub-envs of all tasks stepped together, policy once per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from meta_rl.episodes import Episodes
from meta_rl.finite import check_episodes
from meta_rl.functional import Params
from meta_rl.perf import cpu_count
from meta_rl.samplers.base import EnvBatch, GymEnvs, Sampler, arrays_to_episodes, rollout


class VectorSampler(Sampler):
    """In-process sampler over ``num_tasks * episodes_per_task`` sub-envs.

    Envs are created once and re-tasked through ``set_wrapper_attr("task", ...)`` (what
    ``VectorEnv.set_attr`` does), never re-created. It keeps a plain list instead of
    Gymnasium's ``SyncVectorEnv`` because a meta-RL batch wants exactly one episode per sub-env:
    finished sub-envs must stop (SyncVectorEnv either auto-resets or refuses to step them) and
    per-step ``info`` aggregation is pure overhead here.
    """

    def __init__(self, env_id: str, num_tasks: int, episodes_per_task: int, **kwargs: Any) -> None:
        super().__init__(env_id, num_tasks, episodes_per_task, **kwargs)
        self.envs = self.make_envs()

    def make_envs(self) -> EnvBatch:
        return GymEnvs([self.make_env() for _ in range(self.batch_size)])

    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        reset_seeds, torch_seed = self.phase_seeds(tasks)
        arrays = self.empty_arrays()
        rollout(
            self.envs,
            arrays,
            0,
            policy,
            params,
            tasks,
            reset_seeds,
            torch_seed,
            device=self.device,
            task_forward=self.task_forward,
            clip_to=self.clip_to,
        )
        episodes = arrays_to_episodes(arrays, self.num_tasks, self.episodes_per_task, self.device)
        return check_episodes(episodes, tasks)

    def close(self) -> None:
        super().close()
        self.envs.close()


class MuJoCoSampler(VectorSampler):
    """``VectorSampler`` over ``MuJoCoBatch``: HalfCheetah/Ant families stepped batched.

    Same seeds, same episodes as ``VectorSampler`` (bitwise: the batch reproduces the
    Gymnasium step exactly), with the physics of all sub-envs stepped from ``threads`` threads
    (default: one per core). The policy keeps the caller's torch threads: running it on one
    thread here would be faster on a loaded machine, but changes its float32 results (the
    products' blocking depends on the thread count), and with them the episodes.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.threads = threads or cpu_count()
        super().__init__(env_id, num_tasks, episodes_per_task, **kwargs)

    def make_envs(self) -> EnvBatch:
        from meta_rl.samplers.mujoco import MuJoCoBatch

        return MuJoCoBatch(
            self.env_id, self.batch_size, env_kwargs=self.env_kwargs, threads=self.threads
        )
