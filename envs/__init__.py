"""Task families: Gymnasium envs whose reward depends on a task drawn from a distribution.

Importing this package registers every family under the `MetaRL/` namespace, so
`gymnasium.make("meta_rl.envs:MetaRL/Navigation2D-v0")` works without importing `envs` first.
It also loads the `meta_rl.families` entry points of installed packages (as Gymnasium loads
its `gymnasium.envs` plugins), so a user's package can register its own families: an entry
point names a module (importing it registers) or a function to call.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from importlib.util import find_spec

from gymnasium.envs.registration import register

from meta_rl.envs.base import Task, TaskEnv
from meta_rl.envs.distributions import DirectionTasks, GoalPositionTasks, GoalVelocityTasks

__all__ = [
    "FAMILY_IDS",
    "METAWORLD_IDS",
    "DirectionTasks",
    "GoalPositionTasks",
    "GoalVelocityTasks",
    "Task",
    "TaskEnv",
]

_FAMILIES: list[tuple[str, str, int, dict]] = [
    ("Navigation2D-v0", "meta_rl.envs.navigation:Navigation2DEnv", 100, {}),
    ("HalfCheetahVel-v0", "meta_rl.envs.half_cheetah:HalfCheetahVelEnv", 200, {}),
    ("HalfCheetahDir-v0", "meta_rl.envs.half_cheetah:HalfCheetahDirEnv", 200, {}),
    ("AntVel-v0", "meta_rl.envs.ant:AntVelEnv", 200, {}),
    ("AntDir-v0", "meta_rl.envs.ant:AntDirEnv", 200, {}),
    ("AntGoal-v0", "meta_rl.envs.ant:AntGoalEnv", 200, {}),
    ("ReacherGoal-v0", "meta_rl.envs.reacher:ReacherGoalEnv", 50, {}),
    ("Bandit-K5-v0", "meta_rl.envs.bandit:BernoulliBanditEnv", 10, {"k": 5}),
    ("Bandit-K10-v0", "meta_rl.envs.bandit:BernoulliBanditEnv", 10, {"k": 10}),
    ("Bandit-K50-v0", "meta_rl.envs.bandit:BernoulliBanditEnv", 10, {"k": 50}),
    (
        "TabularMDP-v0",
        "meta_rl.envs.tabular_mdp:TabularMDPEnv",
        10,
        {"num_states": 10, "num_actions": 5},
    ),
]

#: Every family registered by this package, e.g. "MetaRL/AntGoal-v0".
FAMILY_IDS: tuple[str, ...] = tuple(f"MetaRL/{name}" for name, *_ in _FAMILIES)

for _name, _entry_point, _horizon, _kwargs in _FAMILIES:
    register(
        id=f"MetaRL/{_name}",
        entry_point=_entry_point,
        max_episode_steps=_horizon,
        kwargs=_kwargs,
    )


#: The Meta-World families (`MetaRL/MetaWorld-ML1-<env>-v0` for its 50 envs, `...-ML10-v0`,
#: `...-ML45-v0`), registered when the `metaworld` extra is installed (`meta_rl.envs.metaworld`).
METAWORLD_IDS: tuple[str, ...] = ()
if find_spec("metaworld") is not None:
    from meta_rl.envs.metaworld_ids import METAWORLD_IDS, register_families

    register_families()

PLUGIN_GROUP = "meta_rl.families"


def _load_plugins() -> None:
    """Run every installed `meta_rl.families` entry point; a broken one warns, never breaks us."""
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = plugin.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()
        except Exception as exc:
            warnings.warn(
                f"{PLUGIN_GROUP} plugin {plugin.name!r} ({plugin.value}) failed: "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )


_load_plugins()
