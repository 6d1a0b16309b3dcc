"""What acts and learns inside one task: policies, the linear baseline, policy-gradient losses.

Never imports ``meta_rl`` (imports flow ``meta_rl -> agents -> envs``).
"""

from meta_rl.agents.baseline import LinearFeatureBaseline, explained_variance
from meta_rl.agents.pg import (
    discounted_returns,
    gae,
    masked_task_mean,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
)
from meta_rl.agents.policies import (
    ACTIVATIONS,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    Tanh,
    get_activation,
    make_policy,
)

__all__ = [
    "ACTIVATIONS",
    "CategoricalMLPPolicy",
    "GaussianMLPPolicy",
    "LinearFeatureBaseline",
    "Tanh",
    "discounted_returns",
    "explained_variance",
    "gae",
    "get_activation",
    "make_policy",
    "masked_task_mean",
    "normalize_advantages",
    "ppo_clip_loss",
    "reinforce_loss",
]
