"""Meta-training loop: sample tasks, adapt, meta-update; callbacks, log, checkpoint, resume."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from meta_rl import signals
from meta_rl.algorithms.base import IterationReport
from meta_rl.builders import build_meta_learner, build_policy, build_sampler, resolve_device
from meta_rl.callbacks import Callback, TrainingState, as_callback, config_callbacks
from meta_rl.checkpoint import CheckpointManager
from meta_rl.config import Config, ConfigError, config_to_dict, default_run_dir
from meta_rl.envs import TaskEnv
from meta_rl.finite import NonFiniteError, check_metrics, check_parameters
from meta_rl.logger import MetricLogger
from meta_rl.progress import Progress
from meta_rl.runs import RecordError, RunPlan, plan_run


class MetaTrainer:
    """Everything one run holds: sampler, policy, meta-learner, and how to log an iteration."""

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        # Seeding, in one place: the sampler's generator drives tasks, env resets and actions;
        # the policy initialisation has its own stream from the same seed.
        try:
            self.sampler = build_sampler(config, device)
        except ConfigError:
            raise  # already names its key (train.sampler, ...)
        except (ValueError, TypeError) as exc:  # the family's constructor refused env.kwargs
            raise ConfigError(
                f"env: cannot build '{config.env.id}' with env.kwargs {config.env.kwargs}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.policy = build_policy(config, self.sampler, config.train.seed).to(device)
        self.meta_learner = build_meta_learner(config, self.policy, self.sampler)

    def iteration(self, logger: MetricLogger) -> IterationReport:
        """One meta-iteration on freshly drawn tasks; records its metrics on ``logger``."""
        report = self.meta_learner.iteration(self.sampler.sample_tasks())
        logger.record("return/pre_adapt", report.returns[0])
        logger.record("return/post_adapt", report.returns[-1])
        if len(report.returns) > 2:
            for step, value in enumerate(report.returns[1:], 1):
                logger.record(f"return/after_step_{step}", value)
        if report.success:  # the family reports success (Meta-World)
            logger.record("success/pre_adapt", report.success[0])
            logger.record("success/post_adapt", report.success[-1])
        for key, value in report.metrics.items():
            logger.record(key, value)
        logger.record("time/sampling_s", report.sampling_s)
        logger.record("time/optimize_s", report.optimize_s)
        logger.record("perf/env_steps_per_s", report.env_steps / max(report.sampling_s, 1e-9))
        return report

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "sampler_rng": self.sampler.rng_state(),
            "meta_learner": self.meta_learner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.sampler.set_rng_state(state["sampler_rng"])
        self.meta_learner.load_state_dict(state["meta_learner"])

    def close(self) -> None:
        self.sampler.close()


def train(
    config: Config,
    run_dir: Path | None = None,
    resume: Path | None = None,
    *,
    callbacks: Sequence[Callback | Callable[[TrainingState], bool | None]] = (),
    overwrite: bool = False,
    checkpoint: Path | None = None,
) -> Path:
    """Meta-train as configured; returns the run directory (config, CSV, TensorBoard, checkpoints).

    ``train.iterations`` is the run's total. With ``resume``, continues that run from its
    latest checkpoint (or ``checkpoint``) up to it: 2 + 2 iterations give bitwise the same
    result as 4 on CPU, and a run that already has them is left untouched. A new run refuses
    a directory that holds another run unless ``overwrite``, which empties it first. Every
    check, and building the envs and the policy, happens before anything is written.
    ``callbacks`` run after every iteration, after the config's own (``train.eval_every``);
    any of them returning False ends the run (``meta_rl.callbacks``).

    Process-wide settings (torch's thread count, glibc malloc) are left as they are: the
    ``meta-rl train`` command applies them, a script opts in with
    ``meta_rl.perf.configure_learner(config.train.num_threads)`` before calling this.
    """
    run_dir = Path(resume or run_dir or default_run_dir(config))
    device = resolve_device(config.train.device)
    callback_list = [*config_callbacks(config), *map(as_callback, callbacks)]
    plan = plan_run(
        config,
        run_dir,
        resume=resume is not None,
        overwrite=overwrite,
        checkpoint=checkpoint,
        map_location=device,
    )
    if plan.nothing_to_do:
        return run_dir
    trainer = MetaTrainer(config, device)
    try:
        if not isinstance(trainer.sampler.unwrapped, TaskEnv):
            raise ConfigError(f"env.id: '{config.env.id}' did not build a meta_rl.envs.TaskEnv")
        plan.create(config)
        _loop(config, plan, trainer, callback_list)
    finally:
        trainer.close()
    return run_dir


def _loop(config: Config, plan: RunPlan, trainer: MetaTrainer, callbacks: list[Callback]) -> None:
    state = plan.state
    start_iteration, env_steps = 0, 0
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        start_iteration, env_steps = state["iteration"] + 1, state["env_steps"]
        _load_callback_states(callbacks, state.get("callbacks", {}))
    logger = MetricLogger(plan.run_dir, config_to_dict(config), state["logger"] if state else None)
    checkpoints = CheckpointManager(plan.run_dir, config.train.checkpoint_every)
    run = TrainingState(trainer, logger, plan.run_dir, start_iteration - 1, env_steps)
    total = config.train.iterations
    progress = Progress(total, initial=start_iteration, unit="it", desc="train")
    try:
        for callback in callbacks:
            callback.on_training_start(run)
        for iteration in range(start_iteration, total):
            try:
                result = trainer.iteration(logger)
                check_metrics(
                    {"return/pre_adapt": result.returns[0], "return/post_adapt": result.returns[-1]}
                    | result.metrics
                )
                check_parameters(trainer.policy)  # what the update proposed, before it is saved
                run.iteration, run.report = iteration, result
                run.env_steps = env_steps + result.env_steps
                # every callback runs (and records its metrics) before the row is written
                stop = [cb for cb in callbacks if cb.on_iteration_end(run) is False]
            except NonFiniteError as exc:  # from the sampler, the checks or a callback
                raise exc.at(iteration) from None
            env_steps = run.env_steps
            with signals.deferred():  # an iteration is recorded completely or not at all
                _record(logger, checkpoints, iteration, env_steps, trainer, config, callbacks)
            progress.update(
                1,
                pre=f"{result.returns[0]:.2f}",
                post=f"{result.returns[-1]:.2f}",
                steps_per_s=f"{result.env_steps / max(result.sampling_s, 1e-9):.0f}",
            )
            if stop:
                names = ", ".join(type(cb).__name__ for cb in stop)
                progress.write(f"training stopped after iteration {iteration} by {names}")
                break
    finally:
        progress.close()
        for callback in callbacks:
            callback.on_training_end(run)
        logger.close()


def _record(
    logger: MetricLogger,
    checkpoints: CheckpointManager,
    iteration: int,
    env_steps: int,
    trainer: MetaTrainer,
    config: Config,
    callbacks: Sequence[Callback],
) -> None:
    """CSV row and TensorBoard, the numbered checkpoint, then latest.pt (the commit point);
    a failed write takes back the CSV row (and the checkpoint manager its numbered copy)."""
    try:
        logger.dump(iteration, env_steps)
        state = {
            "iteration": iteration,
            "env_steps": env_steps,
            "trainer": trainer.state_dict(),
            "logger": logger.state_dict(),
            "callbacks": _callback_states(callbacks),
            "config": config_to_dict(config),
        }
        checkpoints.save(iteration, state)
    except OSError as exc:
        logger.rollback()
        raise RecordError(iteration, exc) from exc


def _callback_states(callbacks: Sequence[Callback]) -> dict[str, dict[str, Any]]:
    """Keyed by position and class name, so a resume with other callbacks skips what differs."""
    return {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(callbacks)}


def _load_callback_states(callbacks: Sequence[Callback], states: dict[str, Any]) -> None:
    for key, callback in zip(_callback_states(callbacks), callbacks, strict=True):
        if key in states:
            callback.load_state_dict(states[key])


def summary(run_dir: Path) -> str:
    """How the run ended, in one line for the terminal (empty before its first iteration)."""
    with (run_dir / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ""
    first, last = rows[0], rows[-1]
    return (
        f"iteration {last['iteration']}: return before adaptation "
        f"{float(last['return_pre_adapt']):.2f}, after {float(last['return_post_adapt']):.2f} "
        f"(iteration 0: {float(first['return_pre_adapt']):.2f} -> "
        f"{float(first['return_post_adapt']):.2f}); {int(last['env_steps']):,} env steps, "
        f"{float(last['time_s']):.0f} s"
    )
