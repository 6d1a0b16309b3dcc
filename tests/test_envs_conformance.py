"""The conformance kit on every registered family, on broken families, and the catalog."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils import EzPickle

from meta_rl import envs
from meta_rl.envs import TaskEnv
from meta_rl.envs.catalog import family_table, random_policy_return
from meta_rl.envs.testing import TaskEnvError, check_task_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env_id", envs.FAMILY_IDS)
def test_every_registered_family_passes_the_kit(env_id):
    check_task_env(env_id, seed=0)


def test_make_with_module_prefix_in_a_fresh_process():
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'meta_rl.envs' not in sys.modules\n"
        f"ids = {list(envs.FAMILY_IDS)!r}\n"
        "for env_id in ids:\n"
        "    env = gym.make('meta_rl.envs:' + env_id)\n"
        "    env.reset(seed=0)\n"
        "    env.step(env.action_space.sample())\n"
        "print(len(ids))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(len(envs.FAMILY_IDS))


class _Line(TaskEnv):
    """A 1-D point family; subclasses break one rule each."""

    def __init__(self) -> None:
        EzPickle.__init__(self)
        self._setup()

    def _setup(self) -> None:
        self.task_description = "goal ~ U[-1, 1]"
        self.task_space = spaces.Dict({"goal": spaces.Box(-1.0, 1.0, shape=())})
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.task = {"goal": 0.0}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"goal": float(g)} for g in rng.uniform(-1, 1, n)]

    def _apply_task(self, task: dict[str, Any]) -> None:
        self._goal = float(task["goal"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self._x = 0.0
        return np.array([self._x], np.float32), {}

    def step(self, action):
        self._x += float(action[0])
        return np.array([self._x], np.float32), self._reward(), False, False, {}

    def _reward(self) -> float:
        return -abs(self._x - self._goal)


class IgnoresTaskEnv(_Line):
    def _reward(self) -> float:
        return -abs(self._x)


class GlobalRngEnv(_Line):
    def sample_tasks(self, n, rng):
        return [{"goal": float(g)} for g in np.random.uniform(-1, 1, n)]


class NumpyTaskEnv(_Line):
    def sample_tasks(self, n, rng):
        return [{"goal": g} for g in rng.uniform(-1, 1, n)]  # np.float64 is JSON-able...


class ArrayTaskEnv(_Line):
    def sample_tasks(self, n, rng):
        return [{"goal": np.array(g)} for g in rng.uniform(-1, 1, n)]  # ...a 0-d array is not


class OutOfSpaceEnv(_Line):
    def sample_tasks(self, n, rng):
        return [{"goal": float(g)} for g in rng.uniform(-2, 2, n)]


class Float64ObservationEnv(_Line):
    def step(self, action):
        obs, *rest = super().step(action)
        return obs.astype(np.float64), *rest


class NotPicklableEnv(_Line):
    def __init__(self) -> None:
        self._setup()  # forgot EzPickle.__init__


def test_the_sound_line_family_passes_and_keeps_its_task():
    env = _Line()
    env.task = {"goal": 0.625}
    check_task_env(env)
    assert env.task == {"goal": 0.625}


@pytest.mark.parametrize(
    ("family", "message"),
    [
        (IgnoresTaskEnv, "IgnoresTaskEnv: the reward ignores the task"),
        (GlobalRngEnv, "GlobalRngEnv: sample_tasks used the global np.random"),
        (ArrayTaskEnv, "ArrayTaskEnv: sampled task is not JSON-serialisable"),
        (OutOfSpaceEnv, "OutOfSpaceEnv: sampled task .* is outside task_space"),
        (NotPicklableEnv, "NotPicklableEnv: does not pickle"),
        (Float64ObservationEnv, "Float64ObservationEnv: gymnasium check_env warned: .*dtype"),
    ],
)
def test_broken_families_fail_with_a_message_naming_them(family, message):
    with pytest.raises(TaskEnvError, match=message):
        check_task_env(family())


def test_numpy_scalars_in_tasks_are_tolerated_because_json_accepts_them():
    check_task_env(NumpyTaskEnv())


def test_registered_broken_family_is_named_by_its_id():
    gym.register(id="Broken/IgnoresTask-v0", entry_point=IgnoresTaskEnv, max_episode_steps=20)
    with pytest.raises(TaskEnvError, match=r"^Broken/IgnoresTask-v0: the reward ignores"):
        check_task_env("Broken/IgnoresTask-v0")


def test_family_table_lists_every_family_with_its_horizon_and_spaces():
    lines = family_table().splitlines()
    cells = [re.split(r"\s{2,}", line) for line in lines]
    assert cells[0] == ["id", "task distribution", "horizon", "observation", "action"]
    assert set(lines[1]) == {"-", " "}
    rows = {row[0]: row[1:] for row in cells[2:]}
    assert set(envs.FAMILY_IDS) <= set(rows)
    assert rows["MetaRL/Navigation2D-v0"] == [
        "goal ~ U[-0.5, 0.5]^2",
        "100",
        "Box(2,) float32",
        "Box(2,) [-0.1, 0.1] float32",
    ]
    assert rows["MetaRL/AntVel-v0"] == [
        "velocity ~ U[0, 3]",
        "200",
        "Box(105,) float64",
        "Box(8,) [-1, 1] float32",
    ]
    assert rows["MetaRL/Bandit-K50-v0"] == [
        "means ~ U[0, 1]^50",
        "10",
        "Discrete(1)",
        "Discrete(50)",
    ]


def test_random_policy_return_is_seeded_and_matches_the_bandit_expectation():
    # Random arms of a U[0, 1] bandit: E[return] = 10 pulls * 1/2; std of the mean < 5/sqrt(2000).
    value = random_policy_return("MetaRL/Bandit-K5-v0", episodes=2000, seed=0)
    assert value == pytest.approx(5.0, abs=0.45)
    assert random_policy_return("MetaRL/Navigation2D-v0", 3, seed=1) == random_policy_return(
        "MetaRL/Navigation2D-v0", 3, seed=1
    )
    assert random_policy_return("MetaRL/Navigation2D-v0", 3, seed=1) != random_policy_return(
        "MetaRL/Navigation2D-v0", 3, seed=2
    )


class NaNRewardEnv(_Line):
    def step(self, action):
        obs, reward, *rest = super().step(action)
        self._steps = getattr(self, "_steps", 0) + 1
        return obs, np.nan if self._steps == 3 else reward, *rest


class InfObservationEnv(_Line):
    def reset(self, *, seed=None, options=None):
        _, info = super().reset(seed=seed, options=options)
        return np.array([np.inf], np.float32), info


class RedrawsTaskEnv(_Line):
    """Re-samples its task on every reset, as a MuJoCo reset_model that draws a goal would."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.task = self.sample_tasks(1, self.np_random)[0]
        return obs, info


class DropsResetOptionsEnv(_Line):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)  # forgot to pass options on
        self._x = 0.0
        return np.array([self._x], np.float32), {}


class _Parent(_Line):
    """Stands for a v5 MuJoCo env: its __init__ records its own (positional) EzPickle args."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0) -> None:
        EzPickle.__init__(self, scale, offset)
        self._setup()


class EzPickleFirstEnv(_Parent):
    def __init__(self, goal_range: float = 1.0) -> None:
        EzPickle.__init__(self, goal_range=goal_range)  # too early: the parent overwrites it
        _Parent.__init__(self, 2.0, 0.5)


class EzPickleLaterEnv(_Parent):
    def __init__(self, goal_range: float = 1.0) -> None:
        _Parent.__init__(self, 2.0, 0.5)
        EzPickle.__init__(self, goal_range=goal_range)


@pytest.mark.parametrize(
    ("family", "message"),
    [
        (NaNRewardEnv, r"NaNRewardEnv: non-finite reward at step 3 of a seeded random rollout"),
        (InfObservationEnv, r"InfObservationEnv: non-finite observation at reset of a seeded"),
        (
            RedrawsTaskEnv,
            r'RedrawsTaskEnv: reset\(options=\{"task": t\}\) set the task, then reset changed it'
            r" to .*: does reset_model \(or reset\) draw a new task\?",
        ),
        (
            DropsResetOptionsEnv,
            r'DropsResetOptionsEnv: reset\(options=\{"task": t\}\) did not set the task: does '
            r"your reset\(\) call super\(\).reset\(seed=seed, options=options\)\?",
        ),
        (
            EzPickleFirstEnv,
            r"EzPickleFirstEnv: does not pickle .*; EzPickle holds _Parent's arguments, not "
            r"EzPickleFirstEnv's: _Parent.__init__ calls EzPickle.__init__ itself, so call "
            r"EzPickle.__init__\(self, ...\) with EzPickleFirstEnv's own arguments after it$",
        ),
    ],
)
def test_the_kit_says_what_is_actually_wrong(family, message):
    with pytest.raises(TaskEnvError, match=message):
        check_task_env(family())


def test_the_right_ezpickle_order_passes():
    check_task_env(EzPickleLaterEnv())


def test_warnings_are_quoted_without_colour_codes_and_can_be_allowed():
    with pytest.raises(TaskEnvError) as info:
        check_task_env(Float64ObservationEnv())
    assert "\x1b[" not in str(info.value) and "allow_warnings" in str(info.value)
    allowed = [r"float64|dtype|precision", r"obs returned by the `step\(\)` method is not within"]
    check_task_env(Float64ObservationEnv(), allow_warnings=allowed)
