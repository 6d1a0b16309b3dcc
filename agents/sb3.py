"""stable-baselines3 adapters: an SB3 policy's actor as our policy, SB3 algorithms as inner loops.

``SB3Actor`` wraps the actor half of an SB3 ``ActorCriticPolicy`` (features extractor,
``mlp_extractor.policy_net``, ``action_net``, ``log_std``) as a plain policy module returning a
torch ``Distribution``, so MAML and Reptile run it through ``functional_call`` like any other
policy. Its parameters ARE the SB3 policy's tensors (shared modules), and ``sb3_names`` maps them
to the SB3 policy's parameter names.

``SB3InnerLearner`` runs an SB3 on-policy algorithm (PPO, A2C) as Reptile's inner loop on one
task: load theta into the SB3 policy, ``learn()`` for a budget of steps, read theta' back. The
critic is not meta-learned: every task starts it from the same (seeded) initial weights.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
)
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from meta_rl.agents.policies import ACTIVATIONS, diagonal_gaussian

ALGORITHMS: dict[str, type[OnPolicyAlgorithm]] = {"ppo": PPO, "a2c": A2C}


def make_sb3_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    init_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> ActorCriticPolicy:
    """An SB3 ``ActorCriticPolicy`` (actor and critic MLPs of ``hidden_sizes``), seeded.

    SB3 initialises from the global RNG; here its orthogonal scheme (gain sqrt(2) in the MLPs,
    0.01 on the action head, 1 on the value head, zero biases) is redrawn from ``generator``.
    """
    policy = ActorCriticPolicy(
        observation_space,
        action_space,
        lr_schedule=lambda _: 3e-4,
        net_arch={"pi": list(hidden_sizes), "vf": list(hidden_sizes)},
        activation_fn=ACTIVATIONS[activation],
        log_std_init=math.log(init_std),
    )
    gains = {policy.mlp_extractor: math.sqrt(2), policy.action_net: 0.01, policy.value_net: 1.0}
    with torch.no_grad():
        for module, gain in gains.items():
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, gain=gain, generator=generator)
                    layer.bias.zero_()
    return policy


class SB3Actor(nn.Module):
    """The actor of an SB3 ``ActorCriticPolicy`` as a policy: ``forward(obs) -> Distribution``.

    ``obs`` is the preprocessed (float, Discrete one-hot) flat observation with any batch dims,
    as our samplers produce; the distribution is the one SB3 builds for the same parameters:
    ``Independent(Normal(action_net(latent), exp(log_std)), 1)`` for Box actions,
    ``Categorical(logits=action_net(latent))`` for Discrete ones.
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        if not isinstance(policy.action_dist, DiagGaussianDistribution | CategoricalDistribution):
            raise TypeError(
                f"SB3Actor supports Box (DiagGaussian) and Discrete actions, "
                f"not {type(policy.action_dist).__name__}"
            )
        self.features_extractor = policy.pi_features_extractor
        self.policy_net = policy.mlp_extractor.policy_net
        self.action_net = policy.action_net
        self.log_std = (
            policy.log_std if isinstance(policy.action_dist, DiagGaussianDistribution) else None
        )
        # not a submodule: its critic must stay out of named_parameters()
        self._sb3 = (policy,)

    @property
    def sb3_policy(self) -> ActorCriticPolicy:
        return self._sb3[0]

    def sb3_names(self) -> dict[str, str]:
        """Our parameter name -> the SB3 policy's name for the same tensor."""
        by_id = {id(p): name for name, p in self.sb3_policy.named_parameters()}
        return {name: by_id[id(p)] for name, p in self.named_parameters()}

    def policy_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild the same SB3 architecture inside an SB3 algorithm."""
        kwargs = self.sb3_policy._get_constructor_parameters()
        for key in ("observation_space", "action_space", "lr_schedule", "use_sde"):
            kwargs.pop(key, None)
        return kwargs

    def forward(self, obs: Tensor) -> Distribution:
        batch = obs.shape[:-1]
        features = self.features_extractor(obs.reshape(-1, obs.shape[-1]))
        latent = self.policy_net(features.reshape(*batch, features.shape[-1]))
        out = self.action_net(latent)
        if self.log_std is None:
            return Categorical(logits=out, validate_args=False)
        return diagonal_gaussian(out, self.log_std)


class NormalizedObservations(nn.Module):
    """A policy behind the frozen observation statistics of the SB3 ``VecNormalize`` it was
    trained with: ``policy(clip((obs - mean) / sqrt(var + epsilon), -clip, clip))``. The
    statistics are buffers, not parameters: adaptation steps never move them."""

    def __init__(
        self,
        policy: nn.Module,
        mean: Sequence[float],
        var: Sequence[float],
        clip: float,
        epsilon: float,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        scale = np.sqrt(np.asarray(var, dtype=np.float64) + epsilon)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.clip = float(clip)

    def forward(self, obs: Tensor) -> Distribution:
        normalized = ((obs - self.mean) / self.scale).clamp(-self.clip, self.clip)
        return self.policy(normalized)


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Run SB3 code that draws from the global torch / numpy RNGs deterministically.

    SB3 samples actions from torch's global RNG and shuffles minibatches with ``np.random``; both
    are seeded from ``seed`` (drawn from the caller's explicit generator) and restored after,
    so nothing outside sees a changed global state.
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


class SB3InnerLearner:
    """An SB3 on-policy algorithm as the per-task inner loop of Reptile (``TaskLearner``).

    One SB3 model and one ``DummyVecEnv`` of ``n_envs`` sub-envs, built once and re-tasked per
    call (``set_options({"task": ...})`` at the reset ``learn`` starts with; the families keep
    their task across auto-resets). Each call starts from fresh optimiser moments and the same
    initial critic, so theta' depends only on theta, the task and the call's seed.
    """

    def __init__(
        self,
        algo: str,
        actor: SB3Actor,
        env_id: str,
        *,
        steps: int,
        seed: int,
        learning_rate: float = 3e-4,
        env_kwargs: Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        n_envs: int = 1,
        algo_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
        kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        make = functools.partial(gym.make, env_id, **kwargs)
        self.env = DummyVecEnv([make] * n_envs)
        self.steps = steps
        self._rng = np.random.default_rng([seed, 0x5B3])  # not the sampler's stream for `seed`
        self.model = ALGORITHMS[algo](
            ActorCriticPolicy,
            self.env,
            learning_rate=learning_rate,
            policy_kwargs=actor.policy_kwargs(),
            device=actor.action_net.weight.device,
            verbose=0,
            **dict(algo_kwargs or {}),
        )
        policy = self.model.policy
        policy.load_state_dict(actor.sb3_policy.state_dict())  # critic starts where actor's did
        self.names = actor.sb3_names()
        self.initial = {k: v.detach().clone() for k, v in policy.state_dict().items()}

    def learn(
        self, params: Mapping[str, Tensor], task: dict[str, Any]
    ) -> tuple[dict[str, Tensor], int]:
        """theta' after ``steps`` env steps of SB3 learning on ``task`` from ``params``."""
        policy = self.model.policy
        state = dict(self.initial)
        state.update({self.names[k]: v.detach() for k, v in params.items()})
        policy.load_state_dict(state)
        policy.optimizer = policy.optimizer_class(
            policy.parameters(), lr=self.model.lr_schedule(1.0), **policy.optimizer_kwargs
        )
        used = 0
        if self.steps > 0:
            seed = int(self._rng.integers(2**31))
            self.env.set_options({"task": task})
            self.env.seed(seed)
            with seeded_global_rngs(seed):
                self.model.learn(total_timesteps=self.steps, reset_num_timesteps=True)
            used = self.model.num_timesteps
        sb3_state = policy.state_dict()
        return {k: sb3_state[self.names[k]].detach().clone() for k in params}, used

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        self.env.close()
