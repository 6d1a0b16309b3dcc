"""The shared task distributions: every family draws exactly the tasks it drew before sharing them.

The expected values were recorded from the per-family implementations (commit adb744b) with
`sample_tasks(4, np.random.default_rng(0))`; the draw after them pins how much of the stream
each family consumes, so a re-implementation cannot shift later draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from meta_rl.envs import DirectionTasks, GoalPositionTasks, GoalVelocityTasks
from meta_rl.envs.ant import AntDirEnv, AntGoalEnv, AntVelEnv
from meta_rl.envs.half_cheetah import HalfCheetahDirEnv, HalfCheetahVelEnv
from meta_rl.envs.navigation import Navigation2DEnv

_DIRECTIONS = [{"direction": d} for d in (1, 1, 1, -1)]
_RECORDED = {
    Navigation2DEnv: (
        [
            {"goal": [0.1369616873214543, -0.2302132862361297]},
            {"goal": [-0.4590264760638053, -0.4834723644714709]},
            {"goal": [0.3132702392002724, 0.4127555772777217]},
            {"goal": [0.10663577576717986, 0.2294965609839984]},
        ],
        0.5436249914654229,
    ),
    AntGoalEnv: (
        [
            {"goal": [0.8217701239287258, -1.3812797174167781]},
            {"goal": [-2.7541588563828316, -2.9008341868288254]},
            {"goal": [1.879621435201635, 2.47653346366633]},
            {"goal": [0.6398146546030792, 1.3769793659039902]},
        ],
        0.5436249914654229,
    ),
    HalfCheetahVelEnv: (
        [
            {"velocity": 1.2739233746429086},
            {"velocity": 0.5395734275277406},
            {"velocity": 0.08194704787238938},
            {"velocity": 0.03305527105705819},
        ],
        0.8132702392002724,
    ),
    AntVelEnv: (
        [
            {"velocity": 1.910885061964363},
            {"velocity": 0.8093601412916109},
            {"velocity": 0.12292057180858407},
            {"velocity": 0.04958290658558728},
        ],
        0.8132702392002724,
    ),
    HalfCheetahDirEnv: (_DIRECTIONS, 0.04097352393619469),
    AntDirEnv: (_DIRECTIONS, 0.04097352393619469),
}


@pytest.mark.parametrize("cls", list(_RECORDED), ids=lambda cls: cls.__name__)
def test_family_draws_the_recorded_tasks(cls):
    tasks, next_draw = _RECORDED[cls]
    rng = np.random.default_rng(0)
    assert cls().sample_tasks(4, rng) == tasks
    assert rng.random() == next_draw


@pytest.mark.parametrize(
    ("cls", "kwargs", "description", "default", "low", "high"),
    [
        (
            HalfCheetahVelEnv,
            {"velocity_range": (0.5, 1.5)},
            "velocity ~ U[0.5, 1.5]",
            1.0,
            0.5,
            1.5,
        ),
        (AntVelEnv, {"velocity_range": [1, 2]}, "velocity ~ U[1, 2]", 1.5, 1.0, 2.0),
        (Navigation2DEnv, {"goal_low": -2, "goal_high": 1}, "goal ~ U[-2, 1]^2", -0.5, -2.0, 1.0),
        (AntGoalEnv, {"goal_low": -1, "goal_high": 2}, "goal ~ U[-1, 2]^2", 0.5, -1.0, 2.0),
    ],
)
def test_bounded_distributions_follow_their_kwargs(cls, kwargs, description, default, low, high):
    env = cls(**kwargs)
    assert env.task_description == description
    ((key, box),) = env.task_space.spaces.items()
    assert box.dtype == np.float64
    np.testing.assert_array_equal(box.low, low)
    np.testing.assert_array_equal(box.high, high)
    assert np.all(np.asarray(env.task[key]) == default)
    draws = np.array([t[key] for t in env.sample_tasks(2000, np.random.default_rng(1))])
    assert draws.min() >= low and draws.max() <= high
    # Uniform on [low, high]: mean within 5 standard errors of the centre.
    assert abs(draws.mean() - default) < 5 * (high - low) / np.sqrt(12 * draws.size)


@pytest.mark.parametrize("cls", [HalfCheetahDirEnv, AntDirEnv])
def test_direction_refuses_zero_and_stores_the_sign(cls):
    env = cls()
    assert env.task == {"direction": 1} and env._direction == 1
    env.task = {"direction": -1}
    assert env._direction == -1
    with pytest.raises(ValueError, match="must be -1 or \\+1, got 0"):
        env.task = {"direction": 0}


def test_each_family_is_its_distribution():
    assert issubclass(HalfCheetahVelEnv, GoalVelocityTasks)
    assert issubclass(AntVelEnv, GoalVelocityTasks)
    assert issubclass(HalfCheetahDirEnv, DirectionTasks)
    assert issubclass(AntDirEnv, DirectionTasks)
    assert issubclass(Navigation2DEnv, GoalPositionTasks)
    assert issubclass(AntGoalEnv, GoalPositionTasks)
