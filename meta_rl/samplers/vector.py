"""In-process sampler: all sub-envs of all tasks stepped together, policy once per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from meta_rl.episodes import Episodes
from meta_rl.finite import check_episodes
from meta_rl.functional import Params
from meta_rl.samplers.base import Sampler, arrays_to_episodes, rollout


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
        self.envs = [self.make_env() for _ in range(self.batch_size)]

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
        )
        episodes = arrays_to_episodes(arrays, self.num_tasks, self.episodes_per_task, self.device)
        return check_episodes(episodes, tasks)

    def close(self) -> None:
        super().close()
        for env in self.envs:
            env.close()
