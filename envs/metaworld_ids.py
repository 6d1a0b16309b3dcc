"""The Meta-World family ids, registered without importing Meta-World (it costs ~0.4 s).

``meta_rl.envs`` registers these when the ``metaworld`` extra is installed; the families
themselves live in ``meta_rl.envs.metaworld``, imported by ``gymnasium.make``. A test checks
``ENV_NAMES`` against ``metaworld.ML1.ENV_NAMES``.
"""

from __future__ import annotations

from gymnasium.envs.registration import register

HORIZON = 500  # Meta-World's max_path_length: its envs refuse to step past it

#: Meta-World v3's 50 envs, in the order of ``metaworld.ML1.ENV_NAMES`` (3.1.1).
ENV_NAMES: tuple[str, ...] = (
    *("assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3"),
    *("button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-v3"),
    *("button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3"),
    *("dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3"),
    *("door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3"),
    *("faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3"),
    *("handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3"),
    *("pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3"),
    *("plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3"),
    *("peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3"),
    *("stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3", "reach-v3"),
    *("reach-wall-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3"),
    "window-close-v3",
)


def family_id(benchmark: str, env_name: str | None = None) -> str:
    """``MetaRL/MetaWorld-ML1-reach-v3-v0``, ``MetaRL/MetaWorld-ML10-v0``."""
    return f"MetaRL/MetaWorld-{benchmark}{'-' + env_name if env_name else ''}-v0"


#: Every Meta-World family as (benchmark, env name): ML1 of each env, then ML10 and ML45.
FAMILIES: tuple[tuple[str, str | None], ...] = (
    *(("ML1", name) for name in ENV_NAMES),
    ("ML10", None),
    ("ML45", None),
)
METAWORLD_IDS: tuple[str, ...] = tuple(family_id(b, e) for b, e in FAMILIES)


def register_families() -> None:
    """One registration per family, all of them ``MetaWorldFamily`` with its arguments."""
    for benchmark, env_name in FAMILIES:
        register(
            id=family_id(benchmark, env_name),
            entry_point="meta_rl.envs.metaworld:MetaWorldFamily",
            max_episode_steps=HORIZON,
            kwargs={"benchmark": benchmark, "env_name": env_name},
            # The passive checker warns on every make about the hidden goal's low == high dims;
            # the conformance kit runs Gymnasium's full check_env and accepts them.
            disable_env_checker=True,
        )
