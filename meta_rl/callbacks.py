"""Training callbacks: code that runs after every meta-iteration (in the manner of SB3's).

``train(config, callbacks=[...])`` calls each callback's ``on_iteration_end`` after the
iteration's metrics are recorded and before they are written, so a callback can add metrics of
its own (``HeldOutEvaluation`` records ``eval/...``) and stop the run by returning ``False``
(``EarlyStopping``). A plain function ``f(state) -> bool | None`` works as a callback too.

Order within an iteration: the meta-update, every callback in list order (the config's own
callbacks first, then the caller's), one CSV row and TensorBoard dump, the checkpoint (which
stores each callback's ``state_dict``, so a resumed run continues with the same patience count),
then the stop if any callback asked for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from meta_rl.algorithms.base import IterationReport, MetaLearner
from meta_rl.config import Config
from meta_rl.logger import MetricLogger
from meta_rl.samplers import Sampler


class Trainer(Protocol):
    """What a callback may use of the run (``meta_rl.trainer.MetaTrainer`` is one)."""

    config: Config
    sampler: Sampler
    policy: nn.Module
    meta_learner: MetaLearner


@dataclass
class TrainingState:
    """The live run as a callback sees it; ``iteration`` and ``report`` are the last finished."""

    trainer: Trainer
    logger: MetricLogger
    run_dir: Path
    iteration: int = -1
    env_steps: int = 0
    report: IterationReport | None = None

    @property
    def metrics(self) -> Mapping[str, float]:
        """Everything recorded for the current iteration so far (by the trainer and callbacks)."""
        return self.logger.pending


class Callback:
    """Base class: override the hooks you need. ``on_iteration_end`` returning False stops."""

    def on_training_start(self, state: TrainingState) -> None:
        """After the trainer is built (and restored on resume), before the first iteration."""

    def on_iteration_end(self, state: TrainingState) -> bool | None:
        """After each iteration; ``False`` ends training after this iteration's checkpoint."""
        return True

    def on_training_end(self, state: TrainingState) -> None:
        """Once, when training ends for any reason (also after an exception): free resources."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores so a resumed run continues this callback exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class FunctionCallback(Callback):
    """A plain function ``f(state) -> bool | None`` as a callback (only ``False`` stops)."""

    def __init__(self, fn: Callable[[TrainingState], bool | None]) -> None:
        self.fn = fn

    def on_iteration_end(self, state: TrainingState) -> bool | None:
        return self.fn(state)


def as_callback(obj: Callback | Callable[[TrainingState], bool | None]) -> Callback:
    if isinstance(obj, Callback):
        return obj
    if callable(obj):
        return FunctionCallback(obj)
    raise TypeError(f"callbacks: expected a Callback or a callable, got {type(obj).__name__}")


class HeldOutEvaluation(Callback):
    """Every ``every`` iterations, the adaptation curve on held-out tasks, logged as ``eval/``.

    The same protocol and seed stream as ``meta-rl evaluate`` (``meta_rl.evaluation``): the
    tasks come from the held-out stream of ``seed`` (the run's ``train.seed`` by default), the
    sampler's resets and action noise are reset to that stream's state before every evaluation,
    and the policy takes ``steps`` plain policy-gradient steps (``algo.inner_lr``, then
    ``later_factor`` times it). So every evaluation of a run sees the same tasks and noise, and
    the curve changes only with the parameters. It uses its own in-process sampler and never
    touches the policy, the training sampler or the global torch RNG, so training is bitwise
    the same with or without it.

    Records ``eval/return_step_k`` (mean over tasks after k steps, k = 0..steps; also
    ``eval/success_step_k`` for a family that reports success) and
    ``eval/ci95_step_k`` (half-width of the 95 % interval over tasks); ``eval/`` keys get CSV
    columns from the first row, empty where no evaluation ran.
    """

    def __init__(
        self,
        every: int,
        tasks: int = 10,
        episodes: int = 10,
        steps: int = 1,
        *,
        seed: int | None = None,
        later_factor: float = 0.5,
    ) -> None:
        if every < 1 or tasks < 2 or episodes < 1 or steps < 0:
            raise ValueError(
                "HeldOutEvaluation needs every >= 1, tasks >= 2 (for an interval), episodes >= 1"
                f" and steps >= 0; got {every}, {tasks}, {episodes}, {steps}"
            )
        self.every, self.num_tasks, self.episodes, self.steps = every, tasks, episodes, steps
        self.seed, self.later_factor = seed, later_factor
        self._sampler: Sampler | None = None

    def keys(self) -> list[str]:
        """The metric keys one evaluation records."""
        return [
            f"eval/{kind}_step_{k}" for k in range(self.steps + 1) for kind in ("return", "ci95")
        ]

    def on_training_start(self, state: TrainingState) -> None:
        from meta_rl.builders import advantage_estimator
        from meta_rl.evaluation import (
            held_out_generators,
            held_out_tasks,
            make_eval_sampler,
            step_sizes,
        )

        config = state.trainer.config
        seed = config.train.seed if self.seed is None else self.seed
        device = next(state.trainer.policy.parameters()).device
        self._sampler = make_eval_sampler(config, self.num_tasks, self.episodes, device=device)
        self._tasks = held_out_tasks(self._sampler, self.num_tasks, seed)
        self._sampler_state = held_out_generators(seed)[1].bit_generator.state
        self._sizes = step_sizes(config.algo.inner_lr, self.steps, self.later_factor)
        self._advantages = advantage_estimator(config)
        state.logger.declare(self.keys())

    def on_iteration_end(self, state: TrainingState) -> bool:
        if (state.iteration + 1) % self.every:
            return True
        from meta_rl.evaluation import adaptation_curve

        assert self._sampler is not None, "on_training_start was not called"
        curve = adaptation_curve(
            "eval",
            state.trainer.policy,
            self._sampler,
            self._tasks,
            self._sizes,
            self._advantages,
            self._sampler_state,
        )
        for k, (mean, half) in enumerate(curve.mean_ci()):
            state.logger.record(f"eval/return_step_{k}", mean)
            state.logger.record(f"eval/ci95_step_{k}", half)
        for k, (mean, _) in enumerate(curve.success_ci()):  # families that report success
            state.logger.record(f"eval/success_step_{k}", mean)
        return True

    def on_training_end(self, state: TrainingState) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` values.

    Counts only iterations that recorded ``metric`` (with ``HeldOutEvaluation`` before it in the
    list: evaluations), so ``patience=3`` on ``eval/return_step_1`` stops after three
    evaluations in a row without a new best. ``mode="min"`` for metrics where lower is better.
    The best value and the count are checkpointed.
    """

    def __init__(
        self, metric: str, patience: int, *, min_delta: float = 0.0, mode: str = "max"
    ) -> None:
        if patience < 1 or min_delta < 0 or mode not in ("max", "min"):
            raise ValueError(
                "EarlyStopping needs patience >= 1, min_delta >= 0 and mode max or min; "
                f"got {patience}, {min_delta}, {mode!r}"
            )
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.sign = 1.0 if mode == "max" else -1.0
        self.best: float | None = None
        self.since_best = 0

    def on_iteration_end(self, state: TrainingState) -> bool:
        value = state.metrics.get(self.metric)
        if value is None:
            return True
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return self.since_best < self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.since_best = state["best"], int(state["since_best"])


def config_callbacks(config: Config) -> list[Callback]:
    """The callbacks a config asks for: ``train.eval_every`` and ``train.eval_patience``."""
    tr = config.train
    if not tr.eval_every:
        return []
    evaluation = HeldOutEvaluation(tr.eval_every, tr.eval_tasks, tr.eval_episodes, tr.eval_steps)
    callbacks: list[Callback] = [evaluation]
    if tr.eval_patience:
        callbacks.append(EarlyStopping(f"eval/return_step_{tr.eval_steps}", tr.eval_patience))
    return callbacks
