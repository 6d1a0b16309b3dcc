"""Meta-training loop: sample tasks, adapt, meta-update; callbacks, log, checkpoint, resume."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from meta_rl.algorithms.base import IterationReport
from meta_rl.builders import build_meta_learner, build_policy, build_sampler, resolve_device
from meta_rl.callbacks import Callback, TrainingState, as_callback, config_callbacks
from meta_rl.checkpoint import CheckpointManager, find_latest, load_checkpoint
from meta_rl.config import Config, config_to_dict, default_run_dir, save_config
from meta_rl.logger import MetricLogger


class MetaTrainer:
    """Everything one run holds: sampler, policy, meta-learner, and how to log an iteration."""

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        # Seeding, in one place: the sampler's generator drives tasks, env resets and actions;
        # the policy initialisation has its own stream from the same seed.
        self.sampler = build_sampler(config, device)
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
) -> Path:
    """Meta-train as configured; returns the run directory (config, CSV, TensorBoard, checkpoints).

    With ``resume``, continues that run from its latest checkpoint up to
    ``config.train.iterations``: 2 + 2 iterations give bitwise the same result as 4 on CPU.
    ``callbacks`` run after every iteration, after the config's own (``train.eval_every``);
    any of them returning False ends the run (``meta_rl.callbacks``).

    Process-wide settings (torch's thread count, glibc malloc) are left as they are: the
    ``meta-rl train`` command applies them, a script opts in with
    ``meta_rl.perf.configure_learner(config.train.num_threads)`` before calling this.
    """
    run_dir = Path(resume or run_dir or default_run_dir(config))
    device = resolve_device(config.train.device)
    callback_list = [*config_callbacks(config), *map(as_callback, callbacks)]
    state = None
    if resume is not None:
        latest = find_latest(run_dir)
        if latest is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
        state = load_checkpoint(latest, map_location=device)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")

    trainer = MetaTrainer(config, device)
    start_iteration, env_steps = 0, 0
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        start_iteration, env_steps = state["iteration"] + 1, state["env_steps"]
        _load_callback_states(callback_list, state.get("callbacks", {}))
    logger = MetricLogger(run_dir, config_to_dict(config), state["logger"] if state else None)
    checkpoints = CheckpointManager(run_dir, config.train.checkpoint_every)
    run = TrainingState(trainer, logger, run_dir, start_iteration - 1, env_steps)
    total = config.train.iterations
    bar = tqdm(range(start_iteration, total), initial=start_iteration, total=total, unit="it")
    try:
        for callback in callback_list:
            callback.on_training_start(run)
        for iteration in bar:
            result = trainer.iteration(logger)
            env_steps += result.env_steps
            run.iteration, run.env_steps, run.report = iteration, env_steps, result
            # every callback runs (and records its metrics) before the row is written
            stop = [cb for cb in callback_list if cb.on_iteration_end(run) is False]
            logger.dump(iteration, env_steps)
            checkpoints.save(
                iteration,
                {
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "trainer": trainer.state_dict(),
                    "logger": logger.state_dict(),
                    "callbacks": _callback_states(callback_list),
                },
            )
            bar.set_postfix(
                pre=f"{result.returns[0]:.2f}",
                post=f"{result.returns[-1]:.2f}",
                steps_per_s=f"{result.env_steps / max(result.sampling_s, 1e-9):.0f}",
            )
            if stop:
                names = ", ".join(type(cb).__name__ for cb in stop)
                bar.write(
                    f"training stopped after iteration {iteration} by {names}", file=sys.stderr
                )
                break
    finally:
        bar.close()
        for callback in callback_list:
            callback.on_training_end(run)
        logger.close()
        trainer.close()
    return run_dir


def _callback_states(callbacks: Sequence[Callback]) -> dict[str, dict[str, Any]]:
    """Keyed by position and class name, so a resume with other callbacks skips what differs."""
    return {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(callbacks)}


def _load_callback_states(callbacks: Sequence[Callback], states: dict[str, Any]) -> None:
    for key, callback in zip(_callback_states(callbacks), callbacks, strict=True):
        if key in states:
            callback.load_state_dict(states[key])


def summary(run_dir: Path) -> str:
    """A few lines for the terminal: where the run is, how it ended, how to watch it."""
    with (run_dir / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [f"run dir: {run_dir}"]
    if rows:
        first, last = rows[0], rows[-1]
        lines.append(
            f"iteration {last['iteration']}: return before adaptation "
            f"{float(last['return_pre_adapt']):.2f}, after {float(last['return_post_adapt']):.2f} "
            f"(iteration 0: {float(first['return_pre_adapt']):.2f} -> "
            f"{float(first['return_post_adapt']):.2f}); {int(last['env_steps']):,} env steps, "
            f"{float(last['time_s']):.0f} s"
        )
    lines.append(f"TensorBoard logs: {run_dir}  (open with: tensorboard --logdir {run_dir})")
    return "\n".join(lines)
