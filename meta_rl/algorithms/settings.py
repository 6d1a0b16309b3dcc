"""Each meta-learner's hyperparameters: one dataclass per algorithm, which is also its config.

The `algo:` section of a config *is* one of these dataclasses, chosen by its `name`, so a new
hyperparameter is one field here, with its type, range and one-line doc, and nothing else:
the config loader, `--set`, the saved `config.yaml` and the meta-learner all read the same
field. Choices are `Literal`s and ranges sit next to the fields; pydantic checks both when a
dataclass is built, from a config or from Python. This module imports no torch, so a bad config
is reported before torch is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, Strict, model_validator
from pydantic.dataclasses import dataclass

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
"""Unknown keys, NaN and infinities are errors in every settings dataclass."""

# Numbers and flags as YAML writes them: no bools posing as ints, no strings posing as numbers
# (an int is still accepted, and stored as float, where a float is declared: `gamma: 1`).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


class SettingError(ValueError):
    """A rule between fields; ``key`` is relative to the dataclass that raises it."""

    def __init__(self, key: str, what: str, value: Any) -> None:
        super().__init__(f"{key}: {what}, got {value!r}")
        self.key, self.what, self.value = key, what, value


@dataclass(config=STRICT, frozen=True)
class PolicyGradientSettings:
    """What every meta-learner here shares: inner policy-gradient steps and their advantages."""

    inner_lr: Annotated[Float, Field(gt=0)] = 0.1
    """step size of the inner (adaptation) policy-gradient steps"""
    num_inner_steps: Annotated[Int, Field(ge=0)] = 1
    """inner gradient steps per task; 0 turns MAML into plain multi-task training"""
    gamma: Annotated[Float, Field(gt=0, le=1)] = 0.99
    """discount factor"""
    gae_lambda: Annotated[Float, Field(ge=0, le=1)] = 1.0
    """GAE lambda; 1.0 gives Monte-Carlo returns minus the baseline"""
    normalize_advantages: Bool = True
    """standardise advantages per task before each loss"""

    def follows_run_length(self) -> str | None:
        """The field left null that takes ``train.iterations`` as its value, if any: a run
        cannot change its length on resume without changing what its first iterations ran."""
        return None


@dataclass(config=STRICT, frozen=True)
class MAMLTRPOSettings(PolicyGradientSettings):
    """MAML with a TRPO meta-update (Finn et al. 2017); defaults are the paper's."""

    name: Literal["maml_trpo"] = "maml_trpo"
    """meta-learner"""
    first_order: Bool = False
    """drop second-order terms of the meta-gradient (FOMAML)"""
    max_kl: Annotated[Float, Field(gt=0)] = 0.01
    """TRPO trust-region size (mean KL between old and new adapted policies)"""
    cg_iters: Annotated[Int, Field(ge=1)] = 10
    """conjugate-gradient iterations for the TRPO step direction"""
    cg_damping: Annotated[Float, Field(ge=0)] = 1e-5
    """Tikhonov damping added to every Fisher-vector product"""
    ls_max_steps: Annotated[Int, Field(ge=1)] = 15
    """maximum backtracking line-search steps before the update is rejected"""
    ls_backtrack_ratio: Annotated[Float, Field(gt=0, lt=1)] = 0.8
    """step shrink factor per line-search step"""
    fvp: Literal["gauss_newton", "double_backward"] = "gauss_newton"
    """Fisher-vector product: exact Gauss-Newton form (fast) or double backward of the KL"""
    task_chunk: Annotated[Int, Field(ge=0)] = 10
    """tasks per meta-gradient / Fisher-product graph (0: all at once); same math, faster"""
    fisher_subsample: Annotated[Float, Field(gt=0, le=1)] = 1.0
    """Fisher products on every round(1/x)-th step, inner and post-adaptation (1.0: exact)"""
    analytic: Bool = True
    """closed-form meta-gradient and Fisher derivatives when the policy is a plain Gaussian MLP
    (same numbers as autograd, faster); false: autograd for every policy"""
    estimator: Literal["maml", "dice", "lvc"] = "maml"
    """meta-gradient: maml (ignores how the inner batches' distribution depends on theta) |
    dice (adds that sampling term by DiCE's magic box: unbiased) | lvc (ProMP's low-variance
    curvature inner loss instead)"""


@dataclass(config=STRICT, frozen=True)
class ReptileSettings(PolicyGradientSettings):
    """Reptile (Nichol et al. 2018): k inner updates per task, then theta moves toward them."""

    name: Literal["reptile"] = "reptile"
    """meta-learner"""
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    """optimiser of the inner updates (a fresh one per task and iteration)"""
    inner_loss: Literal["reinforce", "ppo"] = "reinforce"
    """inner objective: reinforce (one step per batch) | ppo (ppo_epochs per batch)"""
    ppo_epochs: Annotated[Int, Field(ge=1)] = 4
    """with inner_loss ppo: full-batch PPO epochs on each freshly sampled batch"""
    ppo_clip: Annotated[Float, Field(gt=0)] = 0.2
    """with inner_loss ppo: clipping range of the probability ratio"""
    outer_lr: Annotated[Float, Field(gt=0)] = 1.0
    """eps, the meta step size theta += eps * mean(theta' - theta), at iteration 0"""
    outer_lr_final: Annotated[Float, Field(ge=0)] = 0.0
    """eps reached linearly after outer_anneal_iterations (= outer_lr: constant eps)"""
    outer_anneal_iterations: Annotated[Int, Field(ge=1)] | None = None
    """length of the linear eps schedule; null: train.iterations"""
    outer_optimizer: Literal["none", "sgd", "adam"] = "none"
    """none (interpolate) | sgd | adam (theta - mean(theta') as its gradient, lr eps)"""
    sb3_algo: Literal["ppo", "a2c"] | None = None
    """run each task's inner loop as this SB3 algorithm; needs policy.kind sb3"""
    sb3_steps: Annotated[Int, Field(ge=0)] = 2048
    """with sb3_algo: environment steps of each task's SB3 learn()"""
    sb3_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """with sb3_algo: extra SB3 constructor kwargs (n_steps, batch_size, n_epochs, ...)"""

    def follows_run_length(self) -> str | None:
        annealed = self.outer_lr_final != self.outer_lr
        return (
            "outer_anneal_iterations" if annealed and self.outer_anneal_iterations is None else None
        )

    @model_validator(mode="after")
    def _needs_an_inner_step(self) -> ReptileSettings:
        if self.num_inner_steps < 1:
            raise SettingError("num_inner_steps", "reptile needs >= 1", self.num_inner_steps)
        return self


@dataclass(config=STRICT, frozen=True)
class PROMPSettings(PolicyGradientSettings):
    """ProMP (Rothfuss et al. 2019): LVC inner steps, then several Adam steps on the clipped
    likelihood-ratio surrogate of the adapted policies with a KL penalty on the inner ones."""

    name: Literal["promp"] = "promp"
    """meta-learner"""
    inner_estimator: Literal["lvc", "maml"] = "lvc"
    """inner loss differentiated by the meta-gradient: lvc (ProMP's) | maml (REINFORCE)"""
    outer_lr: Annotated[Float, Field(gt=0)] = 1e-3
    """Adam step size of the outer updates"""
    promp_steps: Annotated[Int, Field(ge=1)] = 5
    """outer gradient steps on every meta-batch"""
    clip: Annotated[Float, Field(gt=0)] = 0.3
    """clipping range of the adapted policies' likelihood ratio"""
    kl_penalty: Annotated[Float, Field(ge=0)] = 5e-4
    """initial coefficient of the KL penalty on each inner step's policy"""
    kl_target: Annotated[Float, Field(gt=0)] | None = 0.01
    """inner KL the penalty is adapted toward (x2 above 1.5 target, /2 below target/1.5);
    null keeps kl_penalty fixed"""

    @model_validator(mode="after")
    def _needs_an_inner_step(self) -> PROMPSettings:
        if self.num_inner_steps < 1:
            raise SettingError("num_inner_steps", "promp needs >= 1", self.num_inner_steps)
        return self


ALGORITHM_SETTINGS: dict[str, type[PolicyGradientSettings]] = {
    "maml_trpo": MAMLTRPOSettings,
    "reptile": ReptileSettings,
    "promp": PROMPSettings,
}
"""Every meta-learner by its `algo.name`; a new one is its settings class plus one entry."""

AlgoSettings = Annotated[
    Union[tuple(ALGORITHM_SETTINGS.values())],  # noqa: UP007  (a Union built from the registry)
    Field(discriminator="name"),
]
"""The `algo:` section: whichever settings dataclass its `name` picks."""
