"""HalfCheetah goal-velocity and goal-direction families (Finn et al. 2017, sec. 5.3)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from meta_rl.envs.base import TaskEnv
from meta_rl.envs.distributions import DirectionTasks, GoalVelocityTasks
from meta_rl.envs.mujoco_model import SharedModelMixin, TaskReward


class HalfCheetahTaskEnv(TaskEnv, SharedModelMixin, HalfCheetahEnv):
    """v5 HalfCheetah whose forward term is the family's `task_reward`, plus the control cost.

    A family on this base declares `task_reward` (see `meta_rl.envs.mujoco_model`), which is
    what lets `train.sampler: mujoco` step it batched.
    """

    @abstractmethod
    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        """`reward_forward` and extra `info` entries, for one env or a batch (see the module)."""

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, Any]]:
        forward, extra = self.task_reward(x_velocity, self.data.qpos, self._task_values())
        ctrl_cost = self.control_cost(action)
        terms = {"reward_forward": forward, "reward_ctrl": -ctrl_cost, **extra}
        return forward - ctrl_cost, terms


class HalfCheetahVelEnv(GoalVelocityTasks, HalfCheetahTaskEnv):
    r"""
    ## Description
    Gymnasium's `HalfCheetah-v5` whose reward asks the cheetah to run forward at a goal
    velocity. The task is `{"velocity": v}`, `v ~ U[velocity_range]` (`U[0, 2]` in the MAML
    paper).

    ## Action and Observation Spaces
    As `HalfCheetah-v5`: `Box(-1, 1, (6,), float32)` actions, `Box(-inf, inf, (17,), float64)`
    observations (every v5 constructor argument is accepted through `**kwargs`).

    ## Rewards
    `reward = reward_forward + reward_ctrl` with
    - `reward_forward = -|x_velocity - v|` (`x_velocity` is v5's finite difference of the
      root's x position over `dt = 0.05`);
    - `reward_ctrl = -ctrl_cost_weight * sum(action^2)`, weight 0.05 as in the MAML code
      (`0.5 * 1e-1`), not v5's default 0.1.

    `info` has both terms, `x_position`, `x_velocity` and the goal `velocity`.

    ## Episode End
    Never terminates; truncated at 200 steps by the registration (v5 default is 1000).

    ## Arguments
    | Parameter          | Type                    | Default      | Description                    |
    | ------------------ | ----------------------- | ------------ | ------------------------------ |
    | `velocity_range`   | **tuple[float, float]** | `(0.0, 2.0)` | support of the goal velocity   |
    | `ctrl_cost_weight` | **float**               | `0.05`       | weight of the control cost     |
    | `**kwargs`         |                         |              | passed to v5 `HalfCheetahEnv`  |

    ## Deviations from the MAML paper / code
    - Observations are v5's 17 dimensions; the MAML code appended the torso's centre of mass
      (20 dimensions), which leaks the x position. v5's reset noise and `frame_skip=5` are kept.
    - The velocity is v5's finite difference (as pytorch-maml-rl); the original rllab code
      read the torso's centre-of-mass velocity.
    - The default task (before any is set) is the centre of `velocity_range`.

    ## Version History
    * v0: Initial version, on top of `HalfCheetah-v5`.
    """

    def __init__(
        self,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        ctrl_cost_weight: float = 0.05,
        **kwargs: Any,
    ) -> None:
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        EzPickle.__init__(
            self, velocity_range=velocity_range, ctrl_cost_weight=ctrl_cost_weight, **kwargs
        )
        self._init_velocity_tasks(velocity_range)

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        velocity = task["velocity"]
        return -abs(x_velocity - velocity), {"velocity": velocity}


class HalfCheetahDirEnv(DirectionTasks, HalfCheetahTaskEnv):
    r"""
    ## Description
    Gymnasium's `HalfCheetah-v5` whose reward asks the cheetah to run forward or backward.
    The task is `{"direction": d}` with `d = +1` or `-1`, each with probability 1/2.

    ## Action and Observation Spaces
    As `HalfCheetah-v5`: `Box(-1, 1, (6,), float32)` actions, `Box(-inf, inf, (17,), float64)`
    observations.

    ## Rewards
    `reward = reward_forward + reward_ctrl` with `reward_forward = d * x_velocity` and
    `reward_ctrl = -ctrl_cost_weight * sum(action^2)`, weight 0.05 as in the MAML code (v5's
    default is 0.1). `info` has both terms, `x_position`, `x_velocity` and `direction`.

    ## Episode End
    Never terminates; truncated at 200 steps by the registration.

    ## Arguments
    | Parameter          | Type      | Default | Description                     |
    | ------------------ | --------- | ------- | ------------------------------- |
    | `ctrl_cost_weight` | **float** | `0.05`  | weight of the control cost      |
    | `**kwargs`         |           |         | passed to v5's `HalfCheetahEnv` |

    ## Deviations from the MAML paper / code
    - Observations are v5's 17 dimensions (the MAML code appended the torso's centre of mass).
    - The default task (before any is set) is `direction = +1`.

    ## Version History
    * v0: Initial version, on top of `HalfCheetah-v5`.
    """

    def __init__(self, ctrl_cost_weight: float = 0.05, **kwargs: Any) -> None:
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        EzPickle.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self._init_direction_tasks()

    def task_reward(self, x_velocity: Any, qpos: np.ndarray, task: dict[str, Any]) -> TaskReward:
        direction = task["direction"]
        return direction * x_velocity, {"direction": direction}
