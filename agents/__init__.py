"""What acts and learns inside one task: policies, the linear baseline, policy-gradient losses.

Never imports the meta-learners (imports flow ``meta_rl -> agents -> envs``). The names below
load their module on first use, so that ``meta_rl.agents.choices`` (what a config may name)
is importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LinearFeatureBaseline": "baseline",
    "explained_variance": "baseline",
    "discounted_returns": "pg",
    "gae": "pg",
    "masked_task_mean": "pg",
    "normalize_advantages": "pg",
    "ppo_clip_loss": "pg",
    "reinforce_loss": "pg",
    "ACTIVATIONS": "policies",
    "CategoricalMLPPolicy": "policies",
    "GaussianMLPPolicy": "policies",
    "Tanh": "policies",
    "get_activation": "policies",
    "make_policy": "policies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
