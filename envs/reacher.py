"""Reacher goal-position family: a two-link arm must bring its fingertip to an unseen goal."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv
from gymnasium.utils import EzPickle

from meta_rl.envs.base import Task
from meta_rl.envs.distributions import GoalPositionTasks


class ReacherGoalEnv(GoalPositionTasks, ReacherEnv):
    r"""
    ## Description
    Gymnasium's `Reacher-v5` with the target drawn once per task instead of at every reset,
    and hidden from the policy. The task is `{"goal": [gx, gy]}`, uniform on the disk of
    radius `goal_radius` around the arm's base (`0.2`: v5 draws its target the same way, by
    rejection from the square).

    ## Action and Observation Spaces
    As `Reacher-v5`: `Box(-1, 1, (2,), float32)` torques. Observations `Box(-inf, inf, (8,),
    float64)`: `cos` and `sin` of the two joint angles, their velocities, and the fingertip's
    x, y. v5's target position and fingertip-minus-target entries are left out: they would
    give the task away, and a meta-learner must infer the goal from rewards.

    ## Rewards
    v5's: `reward = reward_dist + reward_ctrl` with
    - `reward_dist = -reward_dist_weight * |fingertip - goal|` (after the step);
    - `reward_ctrl = -reward_control_weight * sum(action^2)` on the action the env receives,
      so `train.clip_actions` (on by default) bounds it by `2 * reward_control_weight`.

    `info` has both terms and the `distance`.

    ## Episode End
    Never terminates; truncated at 50 steps by the registration (as `Reacher-v5`).

    ## Arguments
    | Parameter               | Type      | Default | Description                        |
    | ----------------------- | --------- | ------- | ---------------------------------- |
    | `goal_radius`           | **float** | `0.2`   | radius of the goal disk            |
    | `reward_dist_weight`    | **float** | `1.0`   | weight of the distance term (v5)   |
    | `reward_control_weight` | **float** | `1.0`   | weight of the control cost (v5)    |
    | `**kwargs`              |           |         | passed to v5's `ReacherEnv`        |

    ## Deviations from `Reacher-v5`
    - The target is the task's goal (v5 redraws it at every reset); the joint-angle and
      velocity reset noise are v5's, drawn from the env's own generator as there.
    - 8 observations instead of 10 (no target, no fingertip-to-target vector; the fingertip
      position is added).
    - The default task (before any is set) is the goal `[0.1, 0.0]`.

    ## Version History
    * v0: Initial version, on top of `Reacher-v5`.
    """

    def __init__(
        self,
        goal_radius: float = 0.2,
        reward_dist_weight: float = 1.0,
        reward_control_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        ReacherEnv.__init__(
            self,
            reward_dist_weight=reward_dist_weight,
            reward_control_weight=reward_control_weight,
            **kwargs,
        )
        EzPickle.__init__(
            self,
            goal_radius=goal_radius,
            reward_dist_weight=reward_dist_weight,
            reward_control_weight=reward_control_weight,
            **kwargs,
        )
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float64)
        self._init_goal_tasks(-goal_radius, goal_radius)
        self.goal_radius = float(goal_radius)
        self.task_description = f"goal ~ U(disk of radius {self.goal_radius:g})"
        self.task = {"goal": [0.5 * self.goal_radius, 0.0]}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        # uniform on the disk: radius R sqrt(u) (area-uniform), angle uniform
        radius = self.goal_radius * np.sqrt(rng.uniform(size=n))
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        goals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        return [{"goal": goal.tolist()} for goal in goals]

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos + self.np_random.uniform(low=-0.1, high=0.1, size=self.model.nq)
        qpos[-2:] = self._goal  # the target's slide joints hold the task's goal
        qvel = self.init_qvel + self.np_random.uniform(low=-0.005, high=0.005, size=self.model.nv)
        qvel[-2:] = 0
        self.set_state(qpos, qvel)
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        theta = self.data.qpos[:2]
        fingertip = self.get_body_com("fingertip")[:2]
        return np.concatenate([np.cos(theta), np.sin(theta), self.data.qvel[:2], fingertip])

    def _get_rew(self, action: np.ndarray) -> tuple[float, dict[str, Any]]:
        # v5's terms, with the distance to the task's goal (v5 reads the target body, which
        # only moves there at the next reset)
        distance = float(np.linalg.norm(self.get_body_com("fingertip")[:2] - self._goal))
        reward_dist = -distance * self._reward_dist_weight
        reward_ctrl = -float(np.square(action).sum()) * self._reward_control_weight
        terms = {"reward_dist": reward_dist, "reward_ctrl": reward_ctrl, "distance": distance}
        return reward_dist + reward_ctrl, terms
