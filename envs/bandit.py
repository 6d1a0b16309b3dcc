"""Bernoulli multi-armed bandits (Duan et al. 2016, as in pytorch-maml-rl)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from meta_rl.envs.base import Task, TaskEnv


class BernoulliBanditEnv(TaskEnv):
    r"""
    ## Description
    A `k`-armed Bernoulli bandit. The task is the arms' success probabilities,
    `{"means": [p_1, ..., p_k]}`, each `p_i ~ U[0, 1]` independently.

    ## Action Space
    `Discrete(k)`: the arm to pull.

    ## Observation Space
    `Discrete(1)`: the observation is always `0` (the sampler one-hot encodes it to `[1.0]`,
    the constant input of pytorch-maml-rl).

    ## Rewards
    `reward ~ Bernoulli(p_a)` for the pulled arm `a`, drawn from the env's own `np_random`
    (seed it through `reset(seed=...)`). `info` has `reward_mean` = `p_a`.

    ## Episode End
    Never terminates; truncated at 10 pulls by the registration (as pytorch-maml-rl).

    ## Arguments
    | Parameter | Type    | Default | Description     |
    | --------- | ------- | ------- | --------------- |
    | `k`       | **int** | `5`     | number of arms  |

    ## Deviations from pytorch-maml-rl
    - The observation space is `Discrete(1)` instead of a constant `Box` of shape `(1,)`.
    - The default task (before any is set) has every mean at 0.5.

    ## Version History
    * v0: Initial version (registered as `Bandit-K5-v0`, `Bandit-K10-v0`, `Bandit-K50-v0`).
    """

    def __init__(self, k: int = 5) -> None:
        EzPickle.__init__(self, k=k)
        if k < 1:
            raise ValueError(f"need k >= 1 arms, got {k}")
        self.k = int(k)
        self.task_description = f"means ~ U[0, 1]^{self.k}"
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(self.k)
        self.task_space = spaces.Dict(
            {"means": spaces.Box(0.0, 1.0, shape=(self.k,), dtype=np.float64)}
        )
        self.task = {"means": [0.5] * self.k}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"means": means.tolist()} for means in rng.uniform(0.0, 1.0, size=(n, self.k))]

    def _apply_task(self, task: dict[str, Any]) -> None:
        self._means = task["means"]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        mean = float(self._means[int(action)])
        reward = float(self.np_random.random() < mean)
        return 0, reward, False, False, {"reward_mean": mean}
