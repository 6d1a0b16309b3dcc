"""Random tabular MDPs (Duan et al. 2016, as in pytorch-maml-rl)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from meta_rl.envs.base import Task, TaskEnv


class TabularMDPEnv(TaskEnv):
    r"""
    ## Description
    A random MDP with `num_states` states and `num_actions` actions. The task is
    `{"transitions": P, "rewards_mean": R}` with `P[s][a]` a distribution over next states,
    `P[s][a] ~ Dirichlet(1, ..., 1)`, and `R[s][a] ~ Normal(1, 1)`, independently per `(s, a)`.

    ## Action Space
    `Discrete(num_actions)`.

    ## Observation Space
    `Discrete(num_states)`: the current state (the sampler one-hot encodes it).

    ## Rewards
    `reward ~ Normal(R[s][a], reward_std)` for the state `s` the action was taken in, then the
    next state is drawn from `P[s][a]`; both from the env's own `np_random`. `reward_std=1`
    as pytorch-maml-rl (and RL^2); `reward_std=0` gives the mean reward. `info` has
    `reward_mean` (= `R[s][a]`) and `state` (the state the action was taken in).

    ## Starting State
    State 0 ("an episode always starts on the first state", Duan et al. 2016).

    ## Episode End
    Never terminates; truncated at 10 steps by the registration.

    ## Arguments
    | Parameter     | Type      | Default | Description                      |
    | ------------- | --------- | ------- | -------------------------------- |
    | `num_states`  | **int**   | `10`    | number of states                 |
    | `num_actions` | **int**   | `5`     | number of actions                |
    | `reward_std`  | **float** | `1.0`   | standard deviation of the reward |

    ## Deviations from pytorch-maml-rl
    - Observations are `Discrete(num_states)` instead of a `Box` holding the state index.
    - The default task (before any is set) has uniform transitions and mean rewards 1.

    ## Version History
    * v0: Initial version.
    """

    def __init__(self, num_states: int = 10, num_actions: int = 5, reward_std: float = 1.0) -> None:
        EzPickle.__init__(
            self, num_states=num_states, num_actions=num_actions, reward_std=reward_std
        )
        if num_states < 1 or num_actions < 1 or reward_std < 0:
            raise ValueError(f"bad sizes/std: {num_states=}, {num_actions=}, {reward_std=}")
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        self.reward_std = float(reward_std)
        self.task_description = (
            f"transitions[s][a] ~ Dir(1^{self.num_states}), rewards_mean[s][a] ~ N(1, 1)"
        )
        self.observation_space = spaces.Discrete(self.num_states)
        self.action_space = spaces.Discrete(self.num_actions)
        shape = (self.num_states, self.num_actions)
        self.task_space = spaces.Dict(
            {
                "transitions": spaces.Box(0.0, 1.0, (*shape, self.num_states), np.float64),
                "rewards_mean": spaces.Box(-np.inf, np.inf, shape, np.float64),
            }
        )
        self.task = {
            "transitions": np.full((*shape, self.num_states), 1.0 / self.num_states),
            "rewards_mean": np.ones(shape),
        }
        self._state = 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        shape = (n, self.num_states, self.num_actions)
        transitions = rng.dirichlet(np.ones(self.num_states), size=shape)
        rewards_mean = rng.normal(1.0, 1.0, size=shape)
        return [
            {"transitions": p.tolist(), "rewards_mean": r.tolist()}
            for p, r in zip(transitions, rewards_mean, strict=True)
        ]

    def _apply_task(self, task: dict[str, Any]) -> None:
        transitions = task["transitions"]
        if not np.allclose(transitions.sum(axis=-1), 1.0, atol=1e-6):
            raise ValueError("task['transitions'][s][a] must each sum to 1")
        self._cumulative = np.cumsum(transitions, axis=-1)
        self._rewards_mean = task["rewards_mean"]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._state = 0
        return self._state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        state, action = self._state, int(action)
        mean = float(self._rewards_mean[state, action])
        reward = mean + self.reward_std * float(self.np_random.standard_normal())
        # Inverse-CDF draw; min() guards against a last cumulative sum of 1 - 1e-16.
        u = self.np_random.random()
        next_state = int(np.searchsorted(self._cumulative[state, action], u, side="right"))
        self._state = min(next_state, self.num_states - 1)
        return self._state, reward, False, False, {"reward_mean": mean, "state": state}
