"""Ant goal-velocity, goal-direction and goal-position families (Finn et al. 2017, sec. 5.3).

The three share the MAML code's cost terms, expressed through v5's constructor arguments:
control cost `0.5 * 1e-2 * sum(a^2)` (the actuators' range is [-1, 1], so the original's
action scaling is 1), contact cost `0.5 * 1e-3 * sum(clip(cfrc_ext, -1, 1)^2)` (equal to v5's
default) and a survive bonus of 0.05 (v5's `healthy_reward`, paid while healthy).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.utils import EzPickle

from meta_rl.envs.base import TaskEnv
from meta_rl.envs.distributions import DirectionTasks, GoalPositionTasks, GoalVelocityTasks
from meta_rl.envs.mujoco_model import SharedModelMixin, TaskReward

_ANT_DEFAULTS: dict[str, Any] = {
    "ctrl_cost_weight": 0.005,
    "contact_cost_weight": 5e-4,
    "healthy_reward": 0.05,
}


class AntTaskEnv(TaskEnv, SharedModelMixin, AntEnv):
    """v5 Ant with the MAML cost weights; subclasses declare the task term, `task_reward`.

    `task_reward` (see `meta_rl.envs.mujoco_model`) is what lets `train.sampler: mujoco` step
    a family on this base batched.
    """

    def __init__(self, family_kwargs: dict[str, Any], **kwargs: Any) -> None:
        ant_kwargs = {**_ANT_DEFAULTS, **kwargs}
        AntEnv.__init__(self, **ant_kwargs)
        EzPickle.__init__(self, **family_kwargs, **kwargs)

    @abstractmethod
    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        """`reward_forward` and extra `info` entries, for one env or a batch (see the module)."""

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, Any]]:
        forward, extra = self.task_reward(x_velocity, self.data.qpos, self._task_values())
        survive = self.healthy_reward
        ctrl_cost = self.control_cost(action)
        contact_cost = self.contact_cost
        terms = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
            **extra,
        }
        return forward + survive - ctrl_cost - contact_cost, terms


_COMMON_DOC = """
    ## Action and Observation Spaces
    As `Ant-v5`: `Box(-1, 1, (8,), float32)` actions, `Box(-inf, inf, ({obs},), float64)`
    observations (qpos without {skipped}, qvel, clipped external contact forces).

    ## Rewards
    `reward = reward_forward + reward_survive + reward_ctrl + reward_contact`, every term in
    `info` (with `x_position`, `y_position`, `x_velocity`, `y_velocity` and the task), where
    - `reward_forward` is the task term below;
    - `reward_survive = 0.05` while healthy (v5 pays nothing on the step that falls; the MAML
      code paid 0.05 on every step);
    - `reward_ctrl = -0.005 * sum(action^2)` (MAML code; v5 default 0.5);
    - `reward_contact = -5e-4 * sum(clip(cfrc_ext, -1, 1)^2)` (MAML code = v5 default). With
      mujoco-py >= 2.0 the original code saw zero contact forces (so no contact cost); v5 calls
      `mj_rnePostConstraint`, so the term is live here, as it was in rllab's MuJoCo 1.31 runs.

    ## Episode End
    - Termination: v5's (and the MAML code's) unhealthy test, torso z outside [0.2, 1.0].
    - Truncation: 200 steps (registration).

    All v5 constructor arguments are accepted through `**kwargs` (e.g. `ctrl_cost_weight`).
"""


class AntVelEnv(GoalVelocityTasks, AntTaskEnv):
    __doc__ = (
        r"""
    ## Description
    Gymnasium's `Ant-v5` whose reward asks the ant to walk along +x at a goal velocity.
    The task is `{"velocity": v}`, `v ~ U[velocity_range]` (`U[0, 3]` in the MAML paper).

    Task term: `reward_forward = -|x_velocity - v| + forward_reward_offset`, offset 1.0 as in
    the MAML code ("make it happy, not suicidal": with termination, an always negative reward
    would teach the ant to fall).
"""
        + _COMMON_DOC.format(obs=105, skipped="x, y")
        + r"""
    ## Arguments
    | Parameter               | Type                    | Default      | Description          |
    | ----------------------- | ----------------------- | ------------ | -------------------- |
    | `velocity_range`        | **tuple[float, float]** | `(0.0, 3.0)` | goal velocity range  |
    | `forward_reward_offset` | **float**               | `1.0`        | added to the term    |

    ## Deviations from the MAML paper / code
    - Observations are v5's 105 dimensions; the MAML code's 111 also had the torso's
      rotation matrix and centre of mass, and the world body's (zero) contact forces.
    - `x_velocity` is v5's finite difference of the torso position (as pytorch-maml-rl);
      the original rllab code read the torso's centre-of-mass velocity.
    - The default task (before any is set) is the centre of `velocity_range`.

    ## Version History
    * v0: Initial version, on top of `Ant-v5`.
    """
    )

    def __init__(
        self,
        velocity_range: tuple[float, float] = (0.0, 3.0),
        forward_reward_offset: float = 1.0,
        **kwargs: Any,
    ) -> None:
        family = {"velocity_range": velocity_range, "forward_reward_offset": forward_reward_offset}
        super().__init__(family, **kwargs)
        self.forward_reward_offset = float(forward_reward_offset)
        self._init_velocity_tasks(velocity_range)

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        velocity = task["velocity"]
        return -abs(x_velocity - velocity) + self.forward_reward_offset, {"velocity": velocity}


class AntDirEnv(DirectionTasks, AntTaskEnv):
    __doc__ = (
        r"""
    ## Description
    Gymnasium's `Ant-v5` whose reward asks the ant to walk forward or backward along x.
    The task is `{"direction": d}`, `d = +1` or `-1` with probability 1/2 each.

    Task term: `reward_forward = d * x_velocity` (MAML code).
"""
        + _COMMON_DOC.format(obs=105, skipped="x, y")
        + r"""
    ## Deviations from the MAML paper / code
    - Observations are v5's 105 dimensions (the MAML code's 111 also had the torso's
      rotation matrix and centre of mass).
    - `x_velocity` is v5's finite difference of the torso position.
    - The default task (before any is set) is `direction = +1`.

    ## Version History
    * v0: Initial version, on top of `Ant-v5`.
    """
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({}, **kwargs)
        self._init_direction_tasks()

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        direction = task["direction"]
        return direction * x_velocity, {"direction": direction}


class AntGoalEnv(GoalPositionTasks, AntTaskEnv):
    __doc__ = (
        r"""
    ## Description
    Gymnasium's `Ant-v5` whose reward asks the ant to walk to a goal position in the plane.
    The task is `{"goal": [gx, gy]}`, uniform on `[goal_low, goal_high]^2` (`[-3, 3]^2`, as
    the MAML code's `ant_env_rand_goal.py`; the paper does not report this family).

    Task term: `reward_forward = -(|x - gx| + |y - gy|) + goal_reward_offset`, the L1 distance
    of the torso to the goal as in both the MAML code and ProMP, offset 4.0 as in the MAML
    code. `info["distance"]` is the L1 distance.
"""
        + _COMMON_DOC.format(obs=107, skipped="nothing")
        + r"""
    ## Arguments
    | Parameter            | Type      | Default | Description                          |
    | -------------------- | --------- | ------- | ------------------------------------ |
    | `goal_low`           | **float** | `-3.0`  | lower bound of each goal coordinate  |
    | `goal_high`          | **float** | `3.0`   | upper bound of each goal coordinate  |
    | `goal_reward_offset` | **float** | `4.0`   | added to the task term               |

    ## Deviations from the MAML paper / code
    - `exclude_current_positions_from_observation` defaults to `False` (v5: `True`): without
      its own x, y a feed-forward policy cannot know where the goal is relative to it. The
      MAML code also observed the full qpos.
    - ProMP's variant (goals uniform on a disc of radius 3, control cost 0.1, no survive bonus,
      no offset, no termination) is not the default; pass its weights as kwargs if needed.
    - The default task (before any is set) is the centre of the goal box.

    ## Version History
    * v0: Initial version, on top of `Ant-v5`.
    """
    )

    def __init__(
        self,
        goal_low: float = -3.0,
        goal_high: float = 3.0,
        goal_reward_offset: float = 4.0,
        exclude_current_positions_from_observation: bool = False,
        **kwargs: Any,
    ) -> None:
        family = {
            "goal_low": goal_low,
            "goal_high": goal_high,
            "goal_reward_offset": goal_reward_offset,
        }
        super().__init__(
            family,
            exclude_current_positions_from_observation=exclude_current_positions_from_observation,
            **kwargs,
        )
        self.goal_reward_offset = float(goal_reward_offset)
        self._init_goal_tasks(goal_low, goal_high)

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        distance = abs(qpos[..., :2] - task["goal"]).sum(axis=-1)
        return -distance + self.goal_reward_offset, {"distance": distance}
