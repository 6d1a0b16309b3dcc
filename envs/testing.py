"""Conformance kit for task families: `check_task_env("MyNS/MyFamily-v0")` in one line.

Each check raises `TaskEnvError` (an `AssertionError`) whose message starts with the family's
name and says what broke, so a failing CI log is enough to fix the family.
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from meta_rl.envs.base import TaskEnv, task_to_arrays

__all__ = ["TaskEnvError", "check_task_env"]


class TaskEnvError(AssertionError):
    """A task family breaks the task-env contract."""


def check_task_env(
    env_id_or_env: str | gym.Env, *, seed: int = 0, allow_warnings: Sequence[str] = ()
) -> None:
    """Checks a task family against the contract the samplers and meta-learners rely on.

    Args:
        env_id_or_env: a registered id (made with `gymnasium.make`) or an env instance.
        seed: seeds every generator used, so a failure reproduces.
        allow_warnings: regular expressions (`re.search`) of Gymnasium `check_env` warnings
            that are expected for this family (any other warning fails the check).

    Raises:
        TaskEnvError: naming the family and the broken property.
    """
    env = gym.make(env_id_or_env) if isinstance(env_id_or_env, str) else env_id_or_env
    base = env.unwrapped
    original_task = base.task if isinstance(base, TaskEnv) else None
    try:
        _check(env, seed, tuple(allow_warnings))
    finally:
        if original_task is not None:
            base.task = original_task
        if isinstance(env_id_or_env, str):
            env.close()


# check_env's advice on Box bounds: observation boxes are unbounded and Navigation2D's actions
# are [-0.1, 0.1] by design. Any other warning (dtype, obs outside its space, ...) is a failure.
_BENIGN_WARNINGS = (
    "space minimum value is -infinity",
    "space maximum value is infinity",
    "we recommend using a symmetric and normalized space",
)


_CONSTANT_DIMS = "space maximum and minimum values are equal"


def _constant_dims_warning(space: gym.Space) -> tuple[str, ...]:
    """Some observation dims with low == high are by design (Meta-World's hidden goal: zeros);
    a box whose every dim is constant is a bug, and its warning stays a failure."""
    if isinstance(space, gym.spaces.Box) and not np.all(space.low == space.high):
        return (_CONSTANT_DIMS,)
    return ()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Gymnasium colours its warnings for terminals
ROLLOUT_STEPS = 50


def _check(env: gym.Env, seed: int, allowed: tuple[str, ...]) -> None:
    base = env.unwrapped
    name = env.spec.id if env.spec is not None else type(base).__name__

    def ensure(condition: bool, message: str) -> None:
        if not condition:
            raise TaskEnvError(f"{name}: {message}")

    ensure(isinstance(base, TaskEnv), f"{type(base).__name__} does not subclass envs.TaskEnv")
    ensure(
        isinstance(base.task_description, str)
        and base.task_description.strip() != ""
        and "\n" not in base.task_description,
        "task_description must be a non-empty one-line string",
    )
    # Before check_env, whose determinism check would report NaN != NaN as non-determinism.
    _rollout(env, base.task, seed, ROLLOUT_STEPS, ensure)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(base, skip_render_check=True, skip_close_check=True)
    except Exception as error:
        raise TaskEnvError(f"{name}: gymnasium check_env failed: {error!r}") from error
    benign = _BENIGN_WARNINGS + _constant_dims_warning(base.observation_space)
    problems = [
        message
        for message in (_ANSI.sub("", str(w.message)) for w in caught if _is_user(w.category))
        if not any(text in message for text in benign)
        and not any(re.search(pattern, message) for pattern in allowed)
    ]
    ensure(
        not problems,
        f"gymnasium check_env warned: {problems} (expected? pass allow_warnings=[PATTERN])",
    )

    tasks = _check_sampling(base, seed, ensure)
    _check_json_and_roundtrip(base, tasks, ensure)
    # Two different tasks (a discrete family can draw the same task twice in a row).
    first = tasks[0]
    second = next(t for t in tasks if _canonical(t) != _canonical(first))
    _check_reset_option(env, second, seed, ensure)
    _check_reward_depends_on_task(env, first, second, seed, ensure)
    _check_pickle(base, second, seed, ensure)
    _check_vector_env(base, [first, second, first], seed, ensure)


Ensure = Callable[[bool, str], None]


def _is_user(category: type[Warning]) -> bool:
    return issubclass(category, UserWarning)


def _canonical(task: Any) -> str:
    return json.dumps(task, sort_keys=True)


def _check_sampling(base: TaskEnv, seed: int, ensure: Ensure) -> list[dict[str, Any]]:
    global_state = np.random.get_state()
    tasks = base.sample_tasks(8, np.random.default_rng(seed))
    again = base.sample_tasks(8, np.random.default_rng(seed))
    other = base.sample_tasks(8, np.random.default_rng(seed + 1))
    ensure(
        _same_global_state(global_state, np.random.get_state()),
        "sample_tasks used the global np.random; draw from the rng argument only",
    )
    ensure(
        isinstance(tasks, list) and len(tasks) == 8 and all(isinstance(t, dict) for t in tasks),
        f"sample_tasks(8, rng) must return a list of 8 dicts, got {type(tasks).__name__}",
    )
    for task in tasks:
        try:
            json.dumps(task)
        except TypeError as error:
            ensure(False, f"sampled task is not JSON-serialisable ({error}); use plain floats")
    ensure(
        [_canonical(t) for t in tasks] == [_canonical(t) for t in again],
        "sample_tasks is not reproducible: the same seed gave different tasks",
    )
    ensure(
        [_canonical(t) for t in tasks] != [_canonical(t) for t in other],
        "sample_tasks gave the same tasks for different seeds",
    )
    ensure(len({_canonical(t) for t in tasks}) > 1, "sample_tasks gave 8 identical tasks in a row")
    for task in tasks:
        try:
            task_to_arrays(task, base.task_space)
        except (ValueError, TypeError) as error:
            ensure(False, f"sampled task {task} is outside task_space: {error}")
    return tasks


def _same_global_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def _check_json_and_roundtrip(base: TaskEnv, tasks: list[dict], ensure: Ensure) -> None:
    for task in tasks:
        loaded = json.loads(json.dumps(task))
        ensure(loaded == task, f"task {task} changes through json.dumps/json.loads")
        try:
            base.task = loaded
        except Exception as error:
            ensure(False, f"env rejects its own JSON round-tripped task {loaded}: {error!r}")
        got = base.task
        ensure(
            _canonical(got) == _canonical(task),
            f"task set/get round trip: set {task}, got {got}",
        )
        got["__mutated__"] = True
        ensure("__mutated__" not in base.task, "the task getter returns the env's own dict")


def _check_reset_option(env: gym.Env, task: dict, seed: int, ensure: Ensure) -> None:
    before = env.unwrapped.task
    env.reset(seed=seed, options={"task": task})
    got = env.unwrapped.task
    if _canonical(got) == _canonical(before) != _canonical(task):
        ensure(
            False,
            'reset(options={"task": t}) did not set the task: does your reset() call '
            "super().reset(seed=seed, options=options)?",
        )
    ensure(
        _canonical(got) == _canonical(task),
        f'reset(options={{"task": t}}) set the task, then reset changed it to {got}: '
        f"{_REDRAW_HINT}",
    )
    env.reset(seed=seed)
    got = env.unwrapped.task
    ensure(
        _canonical(got) == _canonical(task),
        f"reset() without a task option changed the task from {task} to {got}: {_REDRAW_HINT}",
    )


_REDRAW_HINT = (
    "does reset_model (or reset) draw a new task? Only the samplers change tasks, through the "
    "task property or reset(options=...)"
)


def _rollout(env: gym.Env, task: dict, seed: int, steps: int, ensure: Ensure) -> list[float]:
    """Rewards of `steps` seeded random actions, re-resetting at episode ends; every
    observation and reward must be finite."""
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed, options={"task": task})
    _ensure_finite(observation, "observation", "reset", task, ensure)
    rewards = []
    for step in range(1, steps + 1):
        observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        _ensure_finite(observation, "observation", f"step {step}", task, ensure)
        _ensure_finite(reward, "reward", f"step {step}", task, ensure)
        rewards.append(float(reward))
        if terminated or truncated:
            observation, _ = env.reset(seed=seed + step)
            _ensure_finite(observation, "observation", "reset", task, ensure)
    return rewards


def _ensure_finite(value: Any, what: str, when: str, task: dict, ensure: Ensure) -> None:
    array = np.asarray(value, dtype=np.float64) if _numeric(value) else np.zeros(1)
    ensure(
        bool(np.isfinite(array).all()),
        f"non-finite {what} at {when} of a seeded random rollout on task {task}: {value}",
    )


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | np.ndarray | np.generic)


def _check_reward_depends_on_task(
    env: gym.Env, first: dict, second: dict, seed: int, ensure: Ensure
) -> None:
    rewards_first = _rollout(env, first, seed, ROLLOUT_STEPS, ensure)
    rewards_second = _rollout(env, second, seed, ROLLOUT_STEPS, ensure)
    ensure(
        not np.allclose(rewards_first, rewards_second),
        f"the reward ignores the task: two different tasks gave the same rewards over "
        f"{ROLLOUT_STEPS} steps with the same seed and actions",
    )


def _check_pickle(base: TaskEnv, task: dict, seed: int, ensure: Ensure) -> None:
    base.task = task
    try:
        clone = pickle.loads(pickle.dumps(base))
    except Exception as error:
        ensure(False, f"does not pickle ({error!r}); {_ezpickle_advice(base)}")
    try:
        ensure(
            _canonical(clone.task) == _canonical(task),
            f"unpickled env has task {clone.task}, expected {task}",
        )
        ensure(
            np.allclose(
                _rollout(base, task, seed, ROLLOUT_STEPS, ensure),
                _rollout(clone, task, seed, ROLLOUT_STEPS, ensure),
            ),
            "an unpickled copy gives other rewards than the original for the same task, seed "
            f"and actions: {_ezpickle_advice(base)}",
        )
    finally:
        clone.close()


def _ezpickle_advice(base: TaskEnv) -> str:
    """What is wrong with the arguments EzPickle recorded (a pickle rebuilds the env from them)."""
    cls = type(base)
    args = getattr(base, "_ezpickle_args", None)
    kwargs = getattr(base, "_ezpickle_kwargs", None)
    own = f"EzPickle.__init__(self, ...) with {cls.__name__}'s own arguments"
    if args is None or kwargs is None:
        return f"call {own} in __init__"
    if _binds(cls, args, kwargs):
        return f"call {own}, every one that changes the env"
    owner = next((c for c in cls.__mro__[1:] if _binds(c, args, kwargs)), None)
    if owner is None:
        return f"EzPickle recorded arguments {cls.__name__}() does not take; call {own}"
    return (
        f"EzPickle holds {owner.__name__}'s arguments, not {cls.__name__}'s: "
        f"{owner.__name__}.__init__ calls EzPickle.__init__ itself, so call {own} after it"
    )


def _binds(cls: type, args: tuple, kwargs: dict) -> bool:
    init = cls.__dict__.get("__init__")
    if init is None:
        return False
    try:
        inspect.signature(init).bind(None, *args, **kwargs)
    except (TypeError, ValueError):
        return False
    return True


def _check_vector_env(base: TaskEnv, wanted: list[dict], seed: int, ensure: Ensure) -> None:
    spec = base.spec

    def make() -> gym.Env:
        # A registered family goes through its wrappers; a bare instance is cloned by pickle.
        return gym.make(spec) if spec is not None else pickle.loads(pickle.dumps(base))

    vec = gym.vector.SyncVectorEnv([make for _ in range(3)])
    try:
        vec.set_attr("task", wanted)
        got = list(vec.get_attr("task"))
        ensure(
            [_canonical(t) for t in got] == [_canonical(t) for t in wanted],
            f"SyncVectorEnv.set_attr('task', tasks) then get_attr gave {got}, not {wanted}",
        )
        for sub_env, task in zip(vec.envs, wanted, strict=True):
            ensure(
                _canonical(sub_env.unwrapped.task) == _canonical(task),
                "set_attr('task') did not reach the base env (a wrapper shadows `task`)",
            )
        vec.reset(seed=seed)
        got = list(vec.get_attr("task"))
        ensure(
            [_canonical(t) for t in got] == [_canonical(t) for t in wanted],
            "vector reset() changed the sub-envs' tasks",
        )
    finally:
        vec.close()
