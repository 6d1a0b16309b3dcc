"""Meta-training loop: sample tasks, adapt, meta-update; log, checkpoint, resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from tqdm import tqdm

from agents.policies import flat_dim, make_policy
from meta_rl.adaptation import AdvantageEstimator
from meta_rl.base import IterationReport, MetaLearner
from meta_rl.checkpoint import CheckpointManager, find_latest, load_checkpoint
from meta_rl.config import Config, ConfigError, config_to_dict, default_run_dir, save_config
from meta_rl.logger import MetricLogger
from meta_rl.maml import MAMLTRPOLearner, MAMLTRPOSettings
from meta_rl.perf import configure_learner
from meta_rl.sampler import Sampler, VectorSampler


def resolve_device(name: str) -> torch.device:
    """``auto`` means the GPU when there is one; an explicit ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but torch sees no CUDA device")
    return device


def build_policy(config: Config, sampler: Sampler, seed: int) -> nn.Module:
    """The policy for the family's spaces, initialised from its own seeded generator."""
    if config.policy.kind != "mlp":
        return _build_other_policy(config, sampler, torch.Generator().manual_seed(seed))
    policy = make_policy(
        sampler.observation_space,
        sampler.action_space,
        hidden_sizes=tuple(config.policy.hidden_sizes),
        activation=config.policy.activation,
        init_std=config.policy.init_std,
    )
    policy.reset_parameters(torch.Generator().manual_seed(seed))
    return policy


def _build_other_policy(config: Config, sampler: Sampler, generator: torch.Generator) -> nn.Module:
    """``policy.kind`` gru or sb3 (imported lazily: SB3 is slow to import)."""
    pol = config.policy
    if pol.kind == "sb3":
        from agents.sb3 import SB3Actor, make_sb3_policy

        sb3 = make_sb3_policy(
            sampler.observation_space,
            sampler.action_space,
            pol.hidden_sizes,
            pol.activation,
            pol.init_std,
            generator,
        )
        return SB3Actor(sb3)
    from agents.recurrent import GRUPolicy

    space = sampler.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    return GRUPolicy(
        sampler.obs_dim,
        flat_dim(space, "action"),
        pol.hidden_sizes,
        discrete=discrete,
        activation=pol.activation,
        init_std=pol.init_std,
        generator=generator,
    )


def advantage_estimator(config: Config) -> AdvantageEstimator:
    """The run's advantage estimator (training and evaluation must use the same one)."""
    algo = config.algo
    return AdvantageEstimator(algo.gamma, algo.gae_lambda, algo.normalize_advantages)


def build_meta_learner(config: Config, policy: nn.Module, sampler: Sampler) -> MetaLearner:
    """The meta-learner named by ``algo.name``, wired to the policy and sampler."""
    algo = config.algo
    advantages = advantage_estimator(config)
    if algo.name == "maml_trpo":
        settings = MAMLTRPOSettings(
            inner_lr=algo.inner_lr,
            first_order=algo.first_order,
            max_kl=algo.max_kl,
            cg_iters=algo.cg_iters,
            cg_damping=algo.cg_damping,
            ls_max_steps=algo.ls_max_steps,
            ls_backtrack_ratio=algo.ls_backtrack_ratio,
            task_chunk=algo.task_chunk,
            fisher_subsample=algo.fisher_subsample,
            analytic=algo.analytic,
        )
        return MAMLTRPOLearner(policy, sampler, advantages, settings, algo.num_inner_steps)
    if algo.name == "reptile":
        return _build_reptile(config, policy, sampler, advantages)
    raise ValueError(f"algo.name: unknown meta-learner {algo.name!r}")


def _build_reptile(
    config: Config, policy: nn.Module, sampler: Sampler, advantages: AdvantageEstimator
) -> MetaLearner:
    from meta_rl.reptile import ReptileLearner, ReptileSettings

    algo = config.algo
    settings = ReptileSettings(
        inner_lr=algo.inner_lr,
        inner_optimizer=algo.inner_optimizer,
        outer_lr=algo.outer_lr,
        outer_lr_final=algo.outer_lr_final,
        anneal_iterations=algo.outer_anneal_iterations or max(config.train.iterations, 1),
        outer_optimizer=algo.outer_optimizer,
    )
    task_learner = None
    if algo.sb3_algo is not None:
        from agents.sb3 import SB3InnerLearner

        task_learner = SB3InnerLearner(
            algo.sb3_algo,
            policy,
            config.env.id,
            steps=algo.sb3_steps,
            seed=config.train.seed,
            learning_rate=algo.inner_lr,
            env_kwargs=config.env.kwargs,
            max_episode_steps=config.env.max_episode_steps,
            algo_kwargs=algo.sb3_kwargs,
        )
    return ReptileLearner(
        policy,
        sampler,
        advantages,
        settings,
        algo.num_inner_steps,
        inner_loss=algo.inner_loss,
        ppo_epochs=algo.ppo_epochs,
        ppo_clip=algo.ppo_clip,
        task_learner=task_learner,
    )


def build_sampler(config: Config, device: torch.device) -> Sampler:
    """The ``train.sampler`` backend; all three give the same interface (and seeding order)."""
    tr = config.train
    args = (config.env.id, tr.meta_batch_size, tr.episodes_per_task)
    kwargs: dict[str, Any] = {
        "seed": tr.seed,
        "env_kwargs": config.env.kwargs,
        "max_episode_steps": config.env.max_episode_steps,
        "device": device,
    }
    if tr.sampler == "process":
        from meta_rl.parallel_sampler import ProcessSampler

        return ProcessSampler(*args, num_workers=tr.num_workers, **kwargs)
    if tr.sampler == "torch":
        from meta_rl.batched_envs import TorchSampler

        return TorchSampler(*args, **kwargs)
    return VectorSampler(*args, **kwargs)


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


def train(config: Config, run_dir: Path | None = None, resume: Path | None = None) -> Path:
    """Meta-train as configured; returns the run directory (config, CSV, TensorBoard, checkpoints).

    With ``resume``, continues that run from its latest checkpoint up to
    ``config.train.iterations``: 2 + 2 iterations give bitwise the same result as 4 on CPU.
    """
    run_dir = Path(resume or run_dir or default_run_dir(config))
    device = resolve_device(config.train.device)
    # learner: all cores (sampler workers use one thread each); glibc keeps large blocks
    configure_learner(config.train.num_threads)
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
    logger = MetricLogger(run_dir, config_to_dict(config), state["logger"] if state else None)
    checkpoints = CheckpointManager(run_dir, config.train.checkpoint_every)
    total = config.train.iterations
    bar = tqdm(range(start_iteration, total), initial=start_iteration, total=total, unit="it")
    try:
        for iteration in bar:
            result = trainer.iteration(logger)
            env_steps += result.env_steps
            logger.dump(iteration, env_steps)
            checkpoints.save(
                iteration,
                {
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "trainer": trainer.state_dict(),
                    "logger": logger.state_dict(),
                },
            )
            bar.set_postfix(
                pre=f"{result.returns[0]:.2f}",
                post=f"{result.returns[-1]:.2f}",
                steps_per_s=f"{result.env_steps / max(result.sampling_s, 1e-9):.0f}",
            )
    finally:
        bar.close()
        logger.close()
        trainer.close()
    return run_dir


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
