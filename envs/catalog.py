"""The family listing behind `meta-rl envs`, and a random-policy reference return (no torch)."""

from __future__ import annotations

import sys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from meta_rl.envs.base import TaskEnv
from meta_rl.tables import format_table  # standard library only: no torch, no learner

NAMESPACE = "MetaRL"


def family_ids() -> list[str]:
    """Every registered task family, in registration order: ours (`MetaRL/`), and any other id
    whose entry point is a `TaskEnv` subclass already imported (a module the user imported, a
    `meta_rl.families` plugin); Gymnasium's own envs are never imported to find out."""
    return [
        env_id
        for env_id, spec in gym.registry.items()
        if spec.namespace == NAMESPACE or _loaded_task_env(spec.entry_point)
    ]


def _loaded_task_env(entry_point: Any) -> bool:
    if isinstance(entry_point, str):
        module, _, name = entry_point.partition(":")
        entry_point = getattr(sys.modules.get(module), name, None)
    return isinstance(entry_point, type) and issubclass(entry_point, TaskEnv)


def describe_space(space: spaces.Space) -> str:
    """A short space description: `Box(17,) float64`, `Box(2,) [-0.1, 0.1] float32`."""
    if isinstance(space, spaces.Box):
        bounds = ""
        if space.is_bounded() and np.ptp(space.low) == 0 and np.ptp(space.high) == 0:
            bounds = f"[{space.low.flat[0]:g}, {space.high.flat[0]:g}] "
        return f"Box{space.shape} {bounds}{space.dtype}"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    return str(space)


def family_table() -> str:
    """A plain-text table of every MetaRL/ family: task distribution, horizon, spaces."""
    header = ("id", "task distribution", "horizon", "observation", "action")
    rows = [header]
    for env_id in family_ids():
        try:
            env = gym.make(env_id)
        except Exception as exc:  # a user's broken family: say so in its row, list the rest
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            rows.append((env_id, f"cannot build: {why}", "", "", ""))
            continue
        rows.append(
            (
                env_id,
                env.unwrapped.task_description,
                str(env.spec.max_episode_steps),
                describe_space(env.observation_space),
                describe_space(env.action_space),
            )
        )
        env.close()
    return format_table(header, rows[1:], rule=True)


def random_policy_return(env_id: str, episodes: int, seed: int) -> float:
    """Mean undiscounted return of uniformly random actions, one fresh task per episode.

    Reproducible: tasks, resets and actions are all drawn from generators seeded by `seed`.
    """
    if episodes < 1:
        raise ValueError(f"need episodes >= 1, got {episodes}")
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for task in env.unwrapped.sample_tasks(episodes, rng):
        env.reset(seed=int(rng.integers(2**31)), options={"task": task})
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))
