"""Task distributions shared by several families: goal velocity, direction, goal position.

Each is a `TaskEnv` that fills in `task_space`, `task_description`, the default task,
`sample_tasks`, `_apply_task` and `_task_values` (the task as a reward reads it), so a family
inherits one of them and adds only its dynamics and reward. Put the distribution first in the
bases (`class AntVelEnv(GoalVelocityTasks, AntTaskEnv)`) and call its `_init_*` method in
`__init__`, after the simulator is built: it sets the default task, which re-tasks the env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from meta_rl.envs.base import Task, TaskEnv


class GoalVelocityTasks(TaskEnv):
    """`{"velocity": v}`, `v ~ U[velocity_range]`; the default task is the range's centre.

    `step` reads the goal as `self._goal_velocity` (a float).
    """

    velocity_range: tuple[float, float]
    _goal_velocity: float

    def _init_velocity_tasks(self, velocity_range: tuple[float, float]) -> None:
        low, high = (float(x) for x in velocity_range)
        self.velocity_range = (low, high)
        self.task_description = f"velocity ~ U[{low:g}, {high:g}]"
        self.task_space = spaces.Dict(
            {"velocity": spaces.Box(low, high, shape=(), dtype=np.float64)}
        )
        self.task = {"velocity": 0.5 * (low + high)}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"velocity": float(v)} for v in rng.uniform(*self.velocity_range, size=n)]

    def _apply_task(self, task: dict[str, Any]) -> None:
        self._goal_velocity = float(task["velocity"])

    def _task_values(self) -> dict[str, Any]:
        return {"velocity": self._goal_velocity}


class DirectionTasks(TaskEnv):
    """`{"direction": d}`, `d = +1` or `-1` with probability 1/2 each; the default is `+1`.

    `step` reads it as `self._direction` (an int).
    """

    task_description = "direction ~ U{-1, +1}"
    _direction: int

    def _init_direction_tasks(self) -> None:
        # Discrete(3, start=-1) is the smallest space holding -1 and +1; 0 is refused on set.
        self.task_space = spaces.Dict({"direction": spaces.Discrete(3, start=-1)})
        self.task = {"direction": 1}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"direction": int(d)} for d in rng.choice([-1, 1], size=n)]

    def _apply_task(self, task: dict[str, Any]) -> None:
        if task["direction"] == 0:
            raise ValueError("task['direction'] must be -1 or +1, got 0")
        self._direction = task["direction"]

    def _task_values(self) -> dict[str, Any]:
        return {"direction": self._direction}


class GoalPositionTasks(TaskEnv):
    """`{"goal": [gx, gy]}`, uniform on `[goal_low, goal_high]^2`; the default is the centre.

    `step` reads the goal as `self._goal` (a float64 array of shape (2,)).
    """

    goal_low: float
    goal_high: float
    _goal: np.ndarray

    def _init_goal_tasks(self, goal_low: float, goal_high: float) -> None:
        self.goal_low, self.goal_high = float(goal_low), float(goal_high)
        self.task_description = f"goal ~ U[{self.goal_low:g}, {self.goal_high:g}]^2"
        self.task_space = spaces.Dict(
            {"goal": spaces.Box(self.goal_low, self.goal_high, shape=(2,), dtype=np.float64)}
        )
        centre = 0.5 * (self.goal_low + self.goal_high)
        self.task = {"goal": [centre, centre]}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        goals = rng.uniform(self.goal_low, self.goal_high, size=(n, 2))
        return [{"goal": goal.tolist()} for goal in goals]

    def _apply_task(self, task: dict[str, Any]) -> None:
        self._goal = task["goal"]

    def _task_values(self) -> dict[str, Any]:
        return {"goal": self._goal}
