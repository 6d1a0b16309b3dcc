"""Torch-native task families: every task x episode stepped as one tensor op on any device.

Navigation2D, the Bernoulli bandits and the tabular MDP are a few lines of arithmetic per step,
so stepping them in Python objects (even vectorised) costs far more than the policy. Here they
are tensors on the policy's device: a whole MAML-TRPO or Reptile iteration runs on the GPU with
no host round trip, and on CPU this is simply the fastest backend. Dynamics and rewards are
those of the Gymnasium versions in ``envs/`` (tests step both with the same random numbers);
the random numbers themselves come from a ``torch.Generator`` instead of each env's
``np_random``, so only the distribution of a sampled batch matches ``VectorSampler``'s, except
on Navigation2D (deterministic), where the batch is identical. Kept out of ``envs/``
because ``import envs`` must stay torch-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn

import meta_rl.envs  # noqa: F401  (registers the MetaRL/ families with Gymnasium)
from meta_rl.episodes import Episodes
from meta_rl.finite import check_episodes
from meta_rl.functional import Params, shared_as_views
from meta_rl.samplers.base import Sampler


class BatchedEnv(ABC):
    """``B`` independent copies of a family, each with its own task, as tensors.

    ``step`` takes actions ``[B, ...]`` and returns ``(obs, reward, terminated)`` with
    ``obs`` already encoded as policy input ``[B, obs_dim]``; time limits are the sampler's job.
    """

    def __init__(self, env: gym.Env, device: torch.device) -> None:
        self.unwrapped = env.unwrapped
        self.device = device

    @abstractmethod
    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        """One task per copy (the sampler repeats each task over its episodes)."""

    @abstractmethod
    def reset(self, generator: torch.Generator) -> Tensor: ...

    @abstractmethod
    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]: ...


class BatchedNavigation2D(BatchedEnv):
    """``envs.navigation.Navigation2DEnv``: position in float64 as there, observed in float32."""

    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        goals = [t["goal"] for t in tasks]
        self.goal = torch.tensor(goals, dtype=torch.float64, device=self.device)

    def reset(self, generator: torch.Generator) -> Tensor:
        self.position = torch.zeros_like(self.goal)
        return self.position.float()

    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        # the gym env clips the float32 action after casting it to float64: same order here
        self.position = self.position + action.double().clamp(-0.1, 0.1)
        delta = self.position - self.goal
        reward = -torch.linalg.vector_norm(delta, dim=-1)
        terminated = (delta.abs() < 0.01).all(dim=-1)
        return self.position.float(), reward.float(), terminated


class BatchedBandit(BatchedEnv):
    """``meta_rl.envs.bandit.BernoulliBanditEnv``: reward ``u < means[a]`` with ``u ~ U[0, 1)``."""

    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        means = [t["means"] for t in tasks]
        self.means = torch.tensor(means, dtype=torch.float64, device=self.device)
        self._obs = torch.ones(len(tasks), 1, device=self.device)

    def reset(self, generator: torch.Generator) -> Tensor:
        return self._obs

    def transition(self, action: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The step as a function of its random numbers (what the equivalence test drives)."""
        mean = self.means.gather(1, action.long().unsqueeze(1)).squeeze(1)
        reward = (uniform < mean).float()
        return self._obs, reward, torch.zeros_like(reward, dtype=torch.bool)

    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        uniform = torch.rand(
            len(action), generator=generator, device=self.device, dtype=torch.float64
        )
        return self.transition(action, uniform)


class BatchedTabularMDP(BatchedEnv):
    """``envs.tabular_mdp.TabularMDPEnv``: Gaussian reward, inverse-CDF next state, start in 0."""

    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        env = self.unwrapped
        p = torch.tensor([t["transitions"] for t in tasks], dtype=torch.float64)
        self.cumulative = p.cumsum(dim=-1).to(self.device)  # [B, S, A, S]
        self.rewards_mean = torch.tensor(
            [t["rewards_mean"] for t in tasks], dtype=torch.float64, device=self.device
        )
        self.num_states, self.reward_std = env.num_states, env.reward_std
        self._rows = torch.arange(len(tasks), device=self.device)

    def _encode(self) -> Tensor:
        return nn.functional.one_hot(self.state, self.num_states).float()

    def reset(self, generator: torch.Generator) -> Tensor:
        self.state = torch.zeros(len(self._rows), dtype=torch.long, device=self.device)
        return self._encode()

    def transition(
        self, action: Tensor, normal: Tensor, uniform: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The step as a function of its random numbers (what the equivalence test drives)."""
        rows, action = self._rows, action.long()
        reward = self.rewards_mean[rows, self.state, action] + self.reward_std * normal
        cdf = self.cumulative[rows, self.state, action]  # [B, S]
        next_state = torch.searchsorted(cdf, uniform.unsqueeze(1), right=True).squeeze(1)
        self.state = next_state.clamp_max(self.num_states - 1)
        return self._encode(), reward.float(), torch.zeros_like(reward, dtype=torch.bool)

    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        kwargs = {"generator": generator, "device": self.device, "dtype": torch.float64}
        normal = torch.randn(len(action), **kwargs)
        uniform = torch.rand(len(action), **kwargs)
        return self.transition(action, normal, uniform)


BATCHED_FAMILIES: dict[str, type[BatchedEnv]] = {
    "Navigation2DEnv": BatchedNavigation2D,
    "BernoulliBanditEnv": BatchedBandit,
    "TabularMDPEnv": BatchedTabularMDP,
}


def batched_env(env: gym.Env, device: torch.device) -> BatchedEnv:
    """The torch twin of a Gymnasium family instance (same constructor kwargs)."""
    name = type(env.unwrapped).__name__
    if name not in BATCHED_FAMILIES:
        known = ", ".join(sorted(BATCHED_FAMILIES))
        raise ValueError(f"no torch-native version of {name}; sampler 'torch' supports: {known}")
    return BATCHED_FAMILIES[name](env, device)


class TorchSampler(Sampler):
    """``VectorSampler``'s interface over a ``BatchedEnv``: the whole batch on ``device``.

    Draws from its numpy generator in the same order as ``VectorSampler`` (tasks, reset seeds,
    the policy's torch seed), so on Navigation2D both give the same episodes for the same
    seed. ``batched`` builds the family's tensor twin (``batched_env``; ``train.sampler: mjx``
    hands ``meta_rl.samplers.mjx.mjx_batched_env``). Runs every step of the horizon (no host
    sync to test whether all episodes ended); finished episodes are masked, their later
    observations zero as in ``VectorSampler``.
    """

    def __init__(
        self,
        env_id: str,
        num_tasks: int,
        episodes_per_task: int,
        *,
        batched: Callable[[gym.Env, torch.device], BatchedEnv] = batched_env,
        **kwargs: Any,
    ) -> None:
        super().__init__(env_id, num_tasks, episodes_per_task, **kwargs)
        self.batched = batched(self._env, self.device)
        self._clip_to = (
            None
            if self.clip_to is None
            else tuple(torch.from_numpy(bound).to(self.device) for bound in self.clip_to)
        )

    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per (task, episode) slot; ``params`` holds one parameter set per task.

        The steps run in inference mode (less per-op overhead than ``no_grad``); the
        episodes are stacked outside it, so they are ordinary tensors that losses can use.
        """
        reset_seeds, torch_seed = self.phase_seeds(tasks)  # drawn as VectorSampler does
        params = shared_as_views(params)  # compare values once, not every step
        num_tasks, num_episodes, horizon = self.num_tasks, self.episodes_per_task, self.horizon
        batch, dev = self.batch_size, self.device
        env = self.batched
        env.set_tasks([task for task in tasks for _ in range(num_episodes)])
        env_generator = torch.Generator(device=dev).manual_seed(int(reset_seeds[0]))

        obs = env.reset(env_generator)
        observations, actions, rewards, terminated, mask, log_probs = [obs], [], [], [], [], []
        active = torch.ones(batch, dtype=torch.bool, device=dev)
        fork_devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
            torch.manual_seed(torch_seed)  # distributions sample from the global RNG only
            for _ in range(horizon):
                dist = self.task_forward(policy, params, obs.view(num_tasks, num_episodes, -1), 0)
                action = dist.sample()
                log_probs.append(dist.log_prob(action).reshape(batch))
                action = action.reshape(batch, *action.shape[2:])
                env_action = action if self._clip_to is None else action.clamp(*self._clip_to)
                obs, reward, term = env.step(env_action, env_generator)
                in_episode = active.float()
                obs = obs * in_episode.unsqueeze(1)  # zero after the final next-observation
                observations.append(obs)
                actions.append(action)
                rewards.append(reward * in_episode)
                terminated.append(term & active)
                mask.append(in_episode)
                active = active & ~term

        def stack(items: list[Tensor]) -> Tensor:
            out = torch.stack(items)
            return out.view(out.shape[0], num_tasks, num_episodes, *out.shape[2:])

        mask_t = stack(mask)
        truncated = torch.zeros_like(mask_t, dtype=torch.bool)
        truncated[-1] = mask_t[-1] > 0  # TimeLimit: set at the last step, even if terminated
        episodes = Episodes(
            observations=stack(observations),
            actions=stack(actions),
            rewards=stack(rewards),
            mask=mask_t,
            terminated=stack(terminated),
            truncated=truncated,
            log_probs=stack(log_probs),
        )
        return check_episodes(episodes, tasks)
