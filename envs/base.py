"""What every task family shares: the `task` property, task validation, and task-aware reset.

A *task* is a small JSON-serialisable dict (`{"velocity": 1.37}`, `{"goal": [0.2, -0.4]}`)
whose keys and bounds are declared by the family's `task_space` (a `gymnasium.spaces.Dict` of
`Box` / `Discrete` / `Text`). The env stores the task in plain-Python form, so what `env.task`
returns can go straight into `json.dumps`, a vector env's `get_attr`, or a checkpoint.
"""

from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

Task = dict[str, Any]


def to_plain(value: Any) -> Any:
    """Converts numpy arrays/scalars (possibly nested in dicts/lists) to plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def task_to_arrays(task: Mapping[str, Any], task_space: spaces.Dict) -> dict[str, Any]:
    """Converts a task to the task space's dtypes and checks it lies inside the space.

    Returns `{key: np.ndarray}` for `Box` entries, `{key: int}` for `Discrete` ones and
    `{key: str}` for `Text` ones.
    Raises `ValueError` naming the offending key, so a bad `set_attr("task", ...)` is easy to debug.
    """
    if not isinstance(task, Mapping):
        raise ValueError(f"a task must be a mapping, got {type(task).__name__}")
    if set(task) != set(task_space.spaces):
        raise ValueError(f"task keys {sorted(task)} != task space keys {sorted(task_space.spaces)}")
    out: dict[str, Any] = {}
    for key, space in task_space.spaces.items():
        value = task[key]
        if isinstance(space, spaces.Discrete):
            if not _is_integer(value):
                raise ValueError(f"task[{key!r}] = {value!r} is not an integer")
            converted: Any = int(value)
            inside = space.contains(converted)
        elif isinstance(space, spaces.Box):
            # Floats are kept in float64 whatever the Box dtype (gymnasium defaults to float32),
            # so a task survives set -> get -> JSON unchanged.
            dtype = np.float64 if np.issubdtype(space.dtype, np.floating) else space.dtype
            converted = np.asarray(value, dtype=dtype)
            if converted.shape != space.shape:
                raise ValueError(
                    f"task[{key!r}] has shape {converted.shape}, expected {space.shape}"
                )
            inside = bool(np.all(converted >= space.low) and np.all(converted <= space.high))
        elif isinstance(space, spaces.Text):  # a name, e.g. Meta-World's env class
            converted = value
            inside = isinstance(value, str) and space.contains(value)
        else:
            raise TypeError(f"task space entry {key!r} must be Box, Discrete or Text, got {space}")
        if not inside:
            raise ValueError(f"task[{key!r}] = {to_plain(converted)!r} is outside {space}")
        out[key] = converted
    return out


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, int | np.integer) or (
        isinstance(value, float | np.floating) and float(value).is_integer()
    )


class TaskEnv(gym.Env, EzPickle, metaclass=ABCMeta):
    """Base class of a task family: a Gymnasium env whose reward depends on `self.task`.

    Subclasses set `self.task_space` and a default `self.task` in `__init__`, and implement
    `sample_tasks` and `_apply_task` (or inherit all four from a distribution in
    `meta_rl.envs.distributions`). `task` is a property of the *base env* (not of a wrapper)
    and never raises `AttributeError`: `Wrapper.set_wrapper_attr` sets an attribute on the
    first layer that `hasattr` it, so this is what makes `vec_env.set_attr("task", tasks)` reach
    each sub-env's own env instead of silently creating an attribute on the outer wrapper.
    MuJoCo subclasses must call `EzPickle.__init__` *after* the v5 parent's `__init__`, which
    registers the parent's own arguments.
    """

    task_space: spaces.Dict
    #: One line describing the task distribution, shown by `meta-rl envs`.
    task_description: str = ""
    _task: Task | None = None

    @abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draws `n` tasks (plain JSON-serialisable dicts) using only `rng`."""

    def sample_held_out_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draws `n` meta-test tasks: a family with a fixed train/test split (Meta-World)
        draws from its test split; a distribution without one draws as `sample_tasks`."""
        return self.sample_tasks(n, rng)

    @abstractmethod
    def _apply_task(self, task: dict[str, Any]) -> None:
        """Stores the already validated task (numpy arrays / ints) where `step` reads it."""

    def _task_values(self) -> dict[str, Any]:
        """The current task in the form a reward reads it (the distributions store it cheaper)."""
        return task_to_arrays(self._task or {}, self.task_space)

    @property
    def task(self) -> Task | None:
        """The current task as a plain dict (a copy: mutating it does not re-task the env)."""
        return copy.deepcopy(self._task)

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        arrays = task_to_arrays(task, self.task_space)
        self._apply_task(arrays)
        self._task = to_plain(arrays)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Resets; `options={"task": t}` re-tasks the env first."""
        if options is not None and "task" in options:
            self.task = options["task"]
        return super().reset(seed=seed, options=options)

    def __getstate__(self) -> dict[str, Any]:
        # EzPickle rebuilds the env from its constructor arguments; carry the current task too.
        return {**super().__getstate__(), "task": self.task}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        task = state.pop("task")
        super().__setstate__(state)
        if task is not None:
            self.task = task
