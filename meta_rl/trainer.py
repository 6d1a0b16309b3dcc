"""Meta-training loop: sample tasks, adapt, meta-update; log, checkpoint, resume."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from agents.policies import make_policy
from meta_rl.adaptation import AdvantageEstimator, InnerBatch, adapt, detached
from meta_rl.checkpoint import CheckpointManager, find_latest, load_checkpoint
from meta_rl.config import Config, config_to_dict, default_run_dir, save_config
from meta_rl.episodes import Episodes
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.logger import MetricLogger
from meta_rl.maml import MAMLTRPO, MAMLTRPOSettings
from meta_rl.sampler import VectorSampler


def resolve_device(name: str) -> torch.device:
    """``auto`` means the GPU when there is one; an explicit ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device")
    return device


def build_policy(config: Config, sampler: VectorSampler, seed: int) -> nn.Module:
    """The policy for the family's spaces, initialised from its own seeded generator."""
    policy = make_policy(
        sampler.observation_space,
        sampler.action_space,
        hidden_sizes=tuple(config.policy.hidden_sizes),
        activation=config.policy.activation,
        init_std=config.policy.init_std,
    )
    policy.reset_parameters(torch.Generator().manual_seed(seed))
    return policy


@dataclass(frozen=True)
class Rollouts:
    """The data of one meta-iteration: inner-step batches and post-adaptation episodes."""

    inner: list[InnerBatch]
    valid: Episodes

    @property
    def returns(self) -> list[float]:
        """Mean return before each inner step, then after the last one (index 0: pre-adapt)."""
        return [b.episodes.mean_return() for b in self.inner] + [self.valid.mean_return()]

    @property
    def env_steps(self) -> int:
        return sum(b.episodes.num_steps for b in self.inner) + self.valid.num_steps


@dataclass(frozen=True)
class IterationResult:
    """What one meta-iteration produced, for the progress bar."""

    returns: list[float]  # see Rollouts.returns
    env_steps: int
    sampling_s: float


class MetaTrainer:
    """Template of one meta-iteration, shared by every meta-learner.

    ``sample -> adapt -> sample -> meta-update``: the meta-learner only sees the episodes.
    """

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        self.device = device
        train, algo = config.train, config.algo
        seed = train.seed
        # Seeding, in one place: the sampler's generator drives tasks, env resets and actions;
        # the policy initialisation has its own stream.
        self.sampler = VectorSampler(
            config.env.id,
            train.meta_batch_size,
            train.episodes_per_task,
            seed=seed,
            env_kwargs=config.env.kwargs,
            max_episode_steps=config.env.max_episode_steps,
            device=device,
        )
        self.policy = build_policy(config, self.sampler, seed).to(device)
        self.advantages = AdvantageEstimator(algo.gamma, algo.gae_lambda, algo.normalize_advantages)
        self.meta_learner = MAMLTRPO(
            self.policy,
            MAMLTRPOSettings(
                inner_lr=algo.inner_lr,
                first_order=algo.first_order,
                max_kl=algo.max_kl,
                cg_iters=algo.cg_iters,
                cg_damping=algo.cg_damping,
                ls_max_steps=algo.ls_max_steps,
                ls_backtrack_ratio=algo.ls_backtrack_ratio,
            ),
        )

    def collect(self) -> tuple[Rollouts, float]:
        """Pre-adaptation episodes, the inner steps, then post-adaptation episodes.

        Also returns the baseline's mean explained variance on the inner batches.
        """
        tasks = self.sampler.sample_tasks()
        theta = {k: v.detach() for k, v in policy_params(self.policy).items()}
        params = detached(expand_to_tasks(theta, len(tasks)))
        inner: list[InnerBatch] = []
        explained = []
        for _ in range(self.config.algo.num_inner_steps):
            episodes = self.sampler.sample(self.policy, params, tasks)
            advantages, ev = self.advantages(episodes)
            inner.append(InnerBatch(episodes, advantages))
            explained.append(ev)
            lr = self.config.algo.inner_lr
            params = detached(adapt(self.policy, params, inner[-1], lr, create_graph=False))
        valid = self.sampler.sample(self.policy, params, tasks)
        return Rollouts(inner, valid), float(np.mean(explained))

    def iteration(self, logger: MetricLogger) -> IterationResult:
        """One meta-iteration; records its metrics on ``logger``."""
        start = time.perf_counter()
        rollouts, explained_variance = self.collect()
        sampling_s = time.perf_counter() - start
        valid_advantages, _ = self.advantages(rollouts.valid)
        start = time.perf_counter()
        stats = self.meta_learner.step(rollouts.inner, rollouts.valid, valid_advantages)
        optimize_s = time.perf_counter() - start

        returns = rollouts.returns
        logger.record("return/pre_adapt", returns[0])
        logger.record("return/post_adapt", returns[-1])
        if len(returns) > 2:
            for step, value in enumerate(returns[1:], 1):
                logger.record(f"return/after_step_{step}", value)
        logger.record("meta/surrogate_before", stats.surrogate_before)
        logger.record("meta/surrogate_after", stats.surrogate_after)
        logger.record("meta/grad_norm", stats.grad_norm)
        logger.record("trpo/kl", stats.kl)
        logger.record("trpo/line_search_steps", stats.line_search_steps)
        logger.record("trpo/accepted", float(stats.accepted))
        logger.record("trpo/cg_residual", stats.cg_residual)
        logger.record("baseline/explained_variance", explained_variance)
        logger.record("time/sampling_s", sampling_s)
        logger.record("time/optimize_s", optimize_s)
        logger.record("perf/env_steps_per_s", rollouts.env_steps / max(sampling_s, 1e-9))
        return IterationResult(returns, rollouts.env_steps, sampling_s)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "sampler_rng": self.sampler.rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.sampler.set_rng_state(state["sampler_rng"])

    def close(self) -> None:
        self.sampler.close()


def train(config: Config, run_dir: Path | None = None, resume: Path | None = None) -> Path:
    """Meta-train as configured; returns the run directory (config, CSV, TensorBoard, checkpoints).

    With ``resume``, continues that run from its latest checkpoint up to
    ``config.train.iterations``: 2 + 2 iterations give bitwise the same result as 4 on CPU.
    """
    run_dir = Path(resume or run_dir or default_run_dir(config))
    device = resolve_device(config.train.device)
    torch.set_num_threads(config.train.num_threads or os.cpu_count() or 1)
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
