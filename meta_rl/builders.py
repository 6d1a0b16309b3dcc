"""Builders: a run's device, sampler, policy and meta-learner from its config.

Shared by training and evaluation (evaluation must build exactly what training built), and free
of the training loop so that evaluating a run never imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from meta_rl.adaptation import AdvantageEstimator
from meta_rl.agents.policies import flat_dim, make_policy
from meta_rl.algorithms import closed_form
from meta_rl.algorithms.base import MetaLearner
from meta_rl.algorithms.maml_trpo import MAMLTRPOLearner
from meta_rl.algorithms.settings import MAMLTRPOSettings, PROMPSettings, ReptileSettings
from meta_rl.config import Config, ConfigError
from meta_rl.samplers import Sampler, VectorSampler


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
        from meta_rl.agents.sb3 import SB3Actor, make_sb3_policy

        sb3 = make_sb3_policy(
            sampler.observation_space,
            sampler.action_space,
            pol.hidden_sizes,
            pol.activation,
            pol.init_std,
            generator,
        )
        return SB3Actor(sb3)
    from meta_rl.agents.recurrent import GRUPolicy

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
    """The meta-learner named by ``algo.name``, with ``config.algo`` as its settings."""
    advantages = advantage_estimator(config)
    algo = config.algo
    if isinstance(algo, MAMLTRPOSettings):
        return MAMLTRPOLearner(policy, sampler, advantages, algo)
    if isinstance(algo, PROMPSettings):
        from meta_rl.algorithms.promp import ProMPLearner

        return ProMPLearner(policy, sampler, advantages, algo)
    if isinstance(algo, ReptileSettings):
        return _build_reptile(config, algo, policy, sampler, advantages)
    raise ValueError(f"algo.name: no builder for meta-learner {algo.name!r}")


def _build_reptile(
    config: Config,
    algo: ReptileSettings,
    policy: nn.Module,
    sampler: Sampler,
    advantages: AdvantageEstimator,
) -> MetaLearner:
    from meta_rl.algorithms.reptile import ReptileLearner

    if algo.outer_anneal_iterations is None:  # null: anneal eps over the whole run
        algo = dataclasses.replace(algo, outer_anneal_iterations=max(config.train.iterations, 1))
    task_learner = None
    if algo.sb3_algo is not None:
        from meta_rl.agents.sb3 import SB3InnerLearner

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
    return ReptileLearner(policy, sampler, advantages, algo, task_learner=task_learner)


def build_sampler(config: Config, device: torch.device) -> Sampler:
    """The ``train.sampler`` backend; all give the same interface (and seeding order)."""
    tr = config.train
    args = (config.env.id, tr.meta_batch_size, tr.episodes_per_task)
    kwargs: dict[str, Any] = {
        "seed": tr.seed,
        "env_kwargs": config.env.kwargs,
        "max_episode_steps": config.env.max_episode_steps,
        "device": device,
        "task_forward": closed_form.task_forward,  # the plain Gaussian MLP's batched forward
        "clip_actions": tr.clip_actions,
    }
    if tr.sampler == "process":
        from meta_rl.samplers.process import ProcessSampler

        return ProcessSampler(*args, num_workers=tr.num_workers, **kwargs)
    if tr.sampler == "mujoco":
        return _build_mujoco_sampler(config, args, kwargs)
    if tr.sampler == "ray":
        from meta_rl.samplers.ray_sampler import RaySampler

        if tr.ray_env_backend == "mujoco":
            _check_batchable(config)
        return RaySampler(
            *args,
            num_workers=tr.num_workers,
            address=tr.ray_address,
            env_backend=tr.ray_env_backend,
            **kwargs,
        )
    if tr.sampler == "torch":
        from meta_rl.samplers.torch_native import TorchSampler

        return TorchSampler(*args, **kwargs)
    if tr.sampler == "mjx":
        return _build_mjx_sampler(args, kwargs)
    return VectorSampler(*args, **kwargs)


def _build_mjx_sampler(args: tuple, kwargs: dict[str, Any]) -> Sampler:
    """The torch-native sampler over a family stepped by MJX (``meta_rl.samplers.mjx``)."""
    from meta_rl.samplers.torch_native import TorchSampler

    try:
        from meta_rl.samplers.mjx import mjx_batched_env
    except ImportError as exc:
        raise ConfigError(
            f"train.sampler: mjx needs the mjx extra (pip install 'meta-rl[mjx]'): {exc}"
        ) from None
    try:
        return TorchSampler(*args, batched=mjx_batched_env, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"train.sampler: {exc}") from None


def _build_mujoco_sampler(config: Config, args: tuple, kwargs: dict[str, Any]) -> Sampler:
    """Batched MuJoCo: in-process with a thread per core, or over ``num_workers`` processes."""
    from meta_rl.samplers import MuJoCoSampler
    from meta_rl.samplers.process import ProcessSampler

    _check_batchable(config)
    workers = config.train.num_workers
    if workers is None:
        return MuJoCoSampler(*args, **kwargs)
    return ProcessSampler(*args, num_workers=workers, env_backend="mujoco", **kwargs)


def _check_batchable(config: Config) -> None:
    """A config error, before any worker starts, when the family has no batched MuJoCo form."""
    from meta_rl.samplers.mujoco import check_batchable

    key = "ray_env_backend" if config.train.sampler == "ray" else "sampler"
    env = gym.make(config.env.id, **config.env.kwargs)
    try:
        check_batchable(env)
    except ValueError as exc:
        raise ConfigError(f"train.{key}: {exc}") from None
    finally:
        env.close()
