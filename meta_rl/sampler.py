"""Batched episode sampler: all sub-envs of all tasks stepped together, policy once per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

import envs  # noqa: F401  (registers the MetaRL/ families with Gymnasium)
from agents.recurrent import is_recurrent
from meta_rl.episodes import Episodes
from meta_rl.functional import Params, task_distribution, task_step


def observation_dim(space: spaces.Space) -> int:
    """Width of the policy input for an observation space (Discrete is one-hot encoded)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"unsupported observation space {space!r}: use Box or Discrete")


def encode_observations(space: spaces.Space, obs: np.ndarray) -> np.ndarray:
    """Batch of raw observations ``[B, ...]`` -> float32 policy inputs ``[B, obs_dim]``."""
    if isinstance(space, spaces.Discrete):
        one_hot = np.zeros((len(obs), int(space.n)), dtype=np.float32)
        one_hot[np.arange(len(obs)), np.asarray(obs, dtype=np.int64) - int(space.start)] = 1.0
        return one_hot
    return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)


class VectorSampler:
    """In-process sampler over ``num_tasks * episodes_per_task`` sub-envs.

    Envs are created once and re-tasked through ``set_wrapper_attr("task", ...)`` (what
    ``VectorEnv.set_attr`` does), never re-created. It keeps a plain list instead of
    Gymnasium's ``SyncVectorEnv`` because a meta-RL batch wants exactly one episode per sub-env:
    finished sub-envs must stop (SyncVectorEnv either auto-resets or refuses to step them) and
    per-step ``info`` aggregation is pure overhead here. The policy is evaluated once per time
    step for the whole batch, each task with its own parameters; a recurrent policy's state
    (``agents/recurrent.py``) is carried from step to step.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        seed: int,
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_tasks = num_tasks
        self.episodes_per_task = episodes_per_task
        self.device = torch.device(device)
        kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self.envs = [gym.make(env_id, **kwargs) for _ in range(num_tasks * episodes_per_task)]
        spec = self.envs[0].spec
        if spec is None or spec.max_episode_steps is None:
            raise ValueError(f"{env_id}: a task family needs a time limit (max_episode_steps)")
        self.horizon: int = spec.max_episode_steps
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.obs_dim = observation_dim(self.observation_space)
        self._rng = np.random.default_rng(seed)

    @property
    def unwrapped(self) -> gym.Env:
        """One sub-env's base env, e.g. to call ``sample_tasks``."""
        return self.envs[0].unwrapped

    def sample_tasks(self, num_tasks: int | None = None) -> list[dict[str, Any]]:
        """Draw tasks from the family's distribution with the sampler's own generator."""
        return self.unwrapped.sample_tasks(num_tasks or self.num_tasks, self._rng)

    def rng_state(self) -> dict[str, Any]:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    def close(self) -> None:
        for env in self.envs:
            env.close()

    @torch.no_grad()
    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per sub-env; ``params`` holds one parameter set per task (leading dim)."""
        num_tasks, num_episodes = len(tasks), self.episodes_per_task
        if num_tasks != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        batch, horizon = num_tasks * num_episodes, self.horizon
        discrete_actions = isinstance(self.action_space, spaces.Discrete)
        action_shape = () if discrete_actions else self.action_space.shape

        observations = np.zeros((horizon + 1, batch, self.obs_dim), dtype=np.float32)
        actions = np.zeros(
            (horizon, batch, *action_shape), dtype=np.int64 if discrete_actions else np.float32
        )
        rewards = np.zeros((horizon, batch), dtype=np.float32)
        mask = np.zeros((horizon, batch), dtype=np.float32)
        terminated = np.zeros((horizon, batch), dtype=bool)
        truncated = np.zeros((horizon, batch), dtype=bool)
        log_probs = np.zeros((horizon, batch), dtype=np.float32)

        reset_seeds = self._rng.integers(2**31, size=batch)
        first_obs = []
        for i, env in enumerate(self.envs):
            env.set_wrapper_attr("task", tasks[i // num_episodes])
            first_obs.append(env.reset(seed=int(reset_seeds[i]))[0])
        observations[0] = encode_observations(self.observation_space, np.stack(first_obs))

        active = np.ones(batch, dtype=bool)
        recurrent = is_recurrent(policy)
        state = policy.initial_state((num_tasks, num_episodes)) if recurrent else None
        torch_seed = int(self._rng.integers(2**62))
        fork_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(torch_seed)  # distributions sample from the global RNG only
            for t in range(horizon):
                obs = torch.from_numpy(observations[t]).to(self.device)
                obs = obs.view(num_tasks, num_episodes, self.obs_dim)
                if recurrent:
                    dist, state = task_step(policy, params, obs, state)
                else:
                    dist = task_distribution(policy, params, obs, task_dim=0)
                action = dist.sample()
                log_probs[t] = dist.log_prob(action).reshape(batch).cpu().numpy()
                action_np = action.reshape(batch, *action_shape).cpu().numpy()
                actions[t] = action_np
                next_obs = []
                for i in np.flatnonzero(active):
                    obs_i, reward, term, trunc, _ = self.envs[i].step(action_np[i])
                    next_obs.append(obs_i)
                    rewards[t, i], terminated[t, i], truncated[t, i] = reward, term, trunc
                idx = np.flatnonzero(active)
                observations[t + 1, idx] = encode_observations(
                    self.observation_space, np.stack(next_obs)
                )
                mask[t, idx] = 1.0
                active[idx] = ~(terminated[t, idx] | truncated[t, idx])
                if not active.any():
                    break

        def to_tensor(array: np.ndarray, time_steps: int) -> torch.Tensor:
            shaped = array.reshape(time_steps, num_tasks, num_episodes, *array.shape[2:])
            return torch.from_numpy(shaped).to(self.device)

        return Episodes(
            observations=to_tensor(observations, horizon + 1),
            actions=to_tensor(actions, horizon),
            rewards=to_tensor(rewards, horizon),
            mask=to_tensor(mask, horizon),
            terminated=to_tensor(terminated, horizon),
            truncated=to_tensor(truncated, horizon),
            log_probs=to_tensor(log_probs, horizon),
        )
