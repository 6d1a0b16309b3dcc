"""2D point navigation to a random goal (Finn et al. 2017, sec. 5.3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from meta_rl.envs.distributions import GoalPositionTasks


class Navigation2DEnv(GoalPositionTasks):
    r"""
    ## Description
    A point agent starts at the origin of the plane and must move to a goal position. The
    task is the goal, `{"goal": [x, y]}`, drawn uniformly from `[goal_low, goal_high]^2`
    (`[-0.5, 0.5]^2` in the MAML paper).

    ## Action Space
    `Box(-0.1, 0.1, (2,), float32)`: the displacement of the point. Actions outside the box are
    clipped to it inside `step`, as in the original code, so a Gaussian policy can be used
    without squashing.

    ## Observation Space
    `Box(-inf, inf, (2,), float32)`: the position of the point.

    ## Rewards
    `reward = -distance`, with `distance` the Euclidean distance between the point *after* the
    move and the goal. `info["distance"]` holds it.

    ## Starting State
    The point starts at `(0, 0)`, deterministically.

    ## Episode End
    - Termination: when the point is within 0.01 of the goal on *both* axes
      (`|x - gx| < 0.01 and |y - gy| < 0.01`), exactly as the original code.
    - Truncation: 100 steps (the `max_episode_steps` of the registration).

    ## Arguments
    | Parameter   | Type      | Default | Description                               |
    | ----------- | --------- | ------- | ----------------------------------------- |
    | `goal_low`  | **float** | `-0.5`  | lower bound of each goal coordinate       |
    | `goal_high` | **float** | `0.5`   | upper bound of each goal coordinate       |

    The task space is `[goal_low, goal_high]^2`: setting a goal outside it is an error; widen
    the bounds to evaluate out-of-distribution goals.

    ## Deviations from the MAML paper / code
    - Termination is the original code's per-axis test (an L-infinity ball of radius 0.01),
      not a Euclidean ball; the paper only says "within 0.01 of the goal".
    - The default task (before any is set) is the centre of the goal box.

    ## Version History
    * v0: Initial version, following cbfinn/maml_rl `point_env_randgoal.py` and
      pytorch-maml-rl `navigation.py`.
    """

    def __init__(self, goal_low: float = -0.5, goal_high: float = 0.5) -> None:
        EzPickle.__init__(self, goal_low=goal_low, goal_high=goal_high)
        if not goal_low < goal_high:
            raise ValueError(f"need goal_low < goal_high, got {goal_low}, {goal_high}")
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-0.1, 0.1, shape=(2,), dtype=np.float32)
        self._position = np.zeros(2)
        self._init_goal_tasks(goal_low, goal_high)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed, options=options)
        self._position = np.zeros(2)
        distance = float(np.linalg.norm(self._position - self._goal))
        return self._position.astype(np.float32), {"distance": distance}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -0.1, 0.1)
        self._position = self._position + action
        delta = self._position - self._goal
        distance = float(np.linalg.norm(delta))
        terminated = bool(np.all(np.abs(delta) < 0.01))
        info = {"distance": distance, "reward_distance": -distance}
        return self._position.astype(np.float32), -distance, terminated, False, info
