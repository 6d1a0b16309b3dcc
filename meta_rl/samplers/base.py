"""What every sampler shares: the ``Sampler`` interface, seeding, episode arrays, the rollout."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

import meta_rl.envs  # noqa: F401  (registers the MetaRL/ families with Gymnasium)
from meta_rl.agents.recurrent import is_recurrent
from meta_rl.episodes import Episodes
from meta_rl.functional import (
    Params,
    TaskForward,
    shared_as_views,
    task_distribution,
    task_step,
)


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


EpisodeArrays = dict[str, np.ndarray]


def episode_array_specs(
    horizon: int, batch: int, obs_dim: int, action_space: spaces.Space, success: bool = False
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Name -> (dtype, shape) of the time-major arrays behind ``Episodes`` (batch flattened);
    ``success`` adds the per-step ``info["success"]`` of a family that reports it."""
    discrete = isinstance(action_space, spaces.Discrete)
    action_shape = () if discrete else tuple(action_space.shape)
    optional = {"success": (np.dtype(np.bool_), (horizon, batch))} if success else {}
    return {
        "observations": (np.dtype(np.float32), (horizon + 1, batch, obs_dim)),
        "actions": (
            np.dtype(np.int64 if discrete else np.float32),
            (horizon, batch, *action_shape),
        ),
        "rewards": (np.dtype(np.float32), (horizon, batch)),
        "mask": (np.dtype(np.float32), (horizon, batch)),
        "terminated": (np.dtype(np.bool_), (horizon, batch)),
        "truncated": (np.dtype(np.bool_), (horizon, batch)),
        "log_probs": (np.dtype(np.float32), (horizon, batch)),
        **optional,
    }


def arrays_to_episodes(
    arrays: EpisodeArrays, num_tasks: int, episodes_per_task: int, device: torch.device
) -> Episodes:
    """Unflatten the batch dimension into ``[tasks, episodes]`` and move to ``device``."""

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        shaped = array.reshape(array.shape[0], num_tasks, episodes_per_task, *array.shape[2:])
        return torch.from_numpy(shaped).to(device)

    return Episodes(**{name: to_tensor(array) for name, array in arrays.items()})


@dataclass(frozen=True)
class WholeBatch:
    """The meta-batch that ``rollout``'s tasks are rows ``offset:offset + n`` of (a shard's).

    ``rollout`` runs the policy, the action draw and the log-probabilities on the whole
    batch's shapes and keeps its own rows. Torch's CPU kernels round by position: a
    vectorised body and a scalar tail disagree in the last bit (``exp``, ``sigmoid``, ...),
    and the matrix products pick kernels by shape. Only the same layout gives every row the
    bits it gets when one process samples the whole batch (``rollout`` also hands the policy
    a fresh copy of each step's observations, since MKL rounds by the data's alignment on
    some CPUs and a padded shard's rows are a fresh copy); and torch's samplers consume
    random numbers by position, so the padded draw gives every row its own number too.
    ``per_task``: the whole batch's tasks hold parameter sets of their own, so the padding
    must not make the batch look shared (``shared_params`` takes another kernel).
    """

    num_tasks: int
    offset: int = 0
    per_task: bool = True

    def pad(self, rows: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """``rows[n, ...]`` at its place in ``[num_tasks, ...]``, the other rows ``fill``
        (default: row 0, valid input whatever the family); ``rows`` itself if it is whole."""
        if len(rows) == self.num_tasks:
            return rows
        whole = (rows[:1] if fill is None else fill).expand(self.num_tasks, *rows.shape[1:])
        whole = whole.clone()
        whole[self.offset : self.offset + len(rows)] = rows
        return whole

    def pad_params(self, params: Params) -> Params:
        """Parameter sets for the whole batch: the padding differs from row 0 when the whole
        batch's sets do, and equals it when they are shared."""
        return {k: self.pad(v, v[:1] + 1 if self.per_task else None) for k, v in params.items()}

    def own(self, whole: torch.Tensor, num_tasks: int) -> torch.Tensor:
        """The rows of ``whole`` that belong to the ``num_tasks`` tasks at ``offset``."""
        return whole.narrow(0, self.offset, num_tasks)


ActionBounds = tuple[np.ndarray, np.ndarray]


def action_bounds(space: spaces.Space, clip: bool) -> ActionBounds | None:
    """``(low, high)`` that a Box action is clipped to before ``env.step``; None: sent as drawn.

    SB3 clips the same way: a Gaussian sample outside the Box is what the learner sees and
    scores (the episodes keep it and its log-probability), the env gets the nearest action
    inside, so a control cost on the action never punishes a sample the actuators cannot
    apply. Discrete actions are always in their space.
    """
    if not clip or not isinstance(space, spaces.Box):
        return None
    return space.low.astype(np.float32), space.high.astype(np.float32)


def make_family(env_id: str, env_kwargs: dict[str, Any] | None = None) -> tuple[gym.Env, int]:
    """One env of the family and its horizon; a family without a time limit is refused."""
    env = gym.make(env_id, **(env_kwargs or {}))
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ValueError(f"{env_id}: a task family needs a time limit (max_episode_steps)")
    return env, env.spec.max_episode_steps


def reports_success(env: gym.Env) -> bool:
    """Whether the family's step ``info`` carries ``success`` (Meta-World does): one reset and
    one step tell, with an action from a seeded copy of the action space (no side effects)."""
    space = copy.deepcopy(env.action_space)
    space.seed(0)
    env.reset(seed=0)
    return "success" in env.step(space.sample())[4]


class EnvBatch(ABC):
    """The sub-envs that ``rollout`` steps: reset all with one task and seed each, step some.

    ``GymEnvs`` wraps Gymnasium envs; ``meta_rl.samplers.mujoco.MuJoCoBatch`` steps MuJoCo
    families batched. Observations come back raw (stacked ``[n, ...]``), as the envs give them.
    """

    observation_space: spaces.Space

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def reset(self, tasks: Sequence[dict[str, Any]], seeds: Sequence[int | None]) -> np.ndarray:
        """Re-task every sub-env (``tasks[i]`` for sub-env ``i``), reset it with ``seeds[i]``."""

    @abstractmethod
    def step(
        self, rows: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step sub-envs ``rows`` (``actions[j]`` for ``rows[j]``): obs, rewards, terminated,
        truncated and per-row info arrays (possibly none; ``success`` where the family reports
        it), one row per stepped sub-env."""

    @abstractmethod
    def close(self) -> None: ...


class GymEnvs(EnvBatch):
    """Gymnasium envs, one per sub-env, stepped one after the other (of ``info``, only
    ``success`` is gathered, where the family reports it)."""

    def __init__(self, envs: Sequence[gym.Env]) -> None:
        self.envs = list(envs)
        self.observation_space = self.envs[0].observation_space

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, tasks: Sequence[dict[str, Any]], seeds: Sequence[int | None]) -> np.ndarray:
        first = []
        for env, task, seed in zip(self.envs, tasks, seeds, strict=True):
            env.set_wrapper_attr("task", task)
            first.append(env.reset(seed=None if seed is None else int(seed))[0])
        return np.stack(first)

    def step(
        self, rows: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        results = (self.envs[i].step(a) for i, a in zip(rows.tolist(), actions, strict=True))
        obs, rewards, terms, truncs, infos = zip(*results, strict=True)
        info = {}
        if "success" in infos[0]:
            info["success"] = np.asarray([i["success"] for i in infos], dtype=bool)
        return np.stack(obs), np.asarray(rewards), np.asarray(terms), np.asarray(truncs), info

    def close(self) -> None:
        for env in self.envs:
            env.close()


@torch.inference_mode()  # every tensor made here ends in a numpy array
def rollout(
    sub_envs: EnvBatch | Sequence[gym.Env],
    arrays: EpisodeArrays,
    first_row: int,
    policy: nn.Module,
    params: Params,
    tasks: Sequence[dict[str, Any]],
    reset_seeds: np.ndarray,
    torch_seed: int,
    *,
    device: torch.device,
    whole_batch: WholeBatch | None = None,
    stop_when_done: bool = True,
    task_forward: TaskForward = task_distribution,
    clip_to: ActionBounds | None = None,
) -> int:
    """One episode per sub-env, written into rows ``first_row:first_row + len(sub_envs)``.

    The sub-envs hold ``len(tasks)`` tasks in consecutive groups of equal size. The policy runs
    once per time step for all of them, each task with its own parameters (a recurrent
    policy's state is carried from step to step); finished sub-envs stop being stepped and
    their rows stay masked. Actions come from the global torch RNG seeded with
    ``torch_seed`` inside ``fork_rng`` (distributions offer no generator argument), so a draw
    is a function of the sampler's own seed and the caller's RNG is left untouched.
    ``whole_batch`` says where a shard's tasks sit in the batch they were cut from, so a
    worker computes their rows as one process sampling that batch would (``WholeBatch``);
    ``task_forward`` runs a non-recurrent policy with per-task parameters (``Sampler``);
    ``clip_to`` (``Sampler.clip_to``) bounds what reaches the envs, the arrays keep the draw.
    Returns the number of steps until every episode had ended.
    """
    envs = sub_envs if isinstance(sub_envs, EnvBatch) else GymEnvs(sub_envs)
    num_tasks, batch = len(tasks), len(envs)
    episodes_per_task = batch // num_tasks
    whole = whole_batch or WholeBatch(num_tasks)
    params = shared_as_views(whole.pad_params(params))  # a copied shard: compare values once
    rows = slice(first_row, first_row + batch)
    space = envs.observation_space
    observations = arrays["observations"]
    horizon, obs_dim = observations.shape[0] - 1, observations.shape[-1]
    for array in arrays.values():
        array[:, rows] = 0
    env_tasks = [tasks[i // episodes_per_task] for i in range(batch)]
    observations[0, rows] = encode_observations(space, envs.reset(env_tasks, reset_seeds))

    active = np.ones(batch, dtype=bool)
    recurrent = is_recurrent(policy)
    state = policy.initial_state((whole.num_tasks, episodes_per_task)) if recurrent else None
    end = horizon
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(torch_seed)
        for t in range(horizon):
            # a fresh (aligned) copy, not a view at step t's offset: MKL's products round by
            # the data's alignment on some CPUs (AMD EPYC), and a shard's padded copy is aligned
            obs = torch.from_numpy(observations[t, rows]).to(device, copy=True)
            obs = whole.pad(obs.view(num_tasks, episodes_per_task, obs_dim))
            if recurrent:
                dist, state = task_step(policy, params, obs, state)
            else:
                dist = task_forward(policy, params, obs, 0)
            drawn = dist.sample()
            log_prob = whole.own(dist.log_prob(drawn), num_tasks)
            action = whole.own(drawn, num_tasks)
            arrays["log_probs"][t, rows] = log_prob.reshape(batch).cpu().numpy()
            action_np = action.reshape(batch, *arrays["actions"].shape[2:]).cpu().numpy()
            arrays["actions"][t, rows] = action_np
            if not active.any():
                continue  # only reached with stop_when_done=False
            idx = np.flatnonzero(active)
            # results are written once per step, vectorised
            env_action = action_np[idx] if clip_to is None else np.clip(action_np[idx], *clip_to)
            next_obs, rewards, terms, truncs, info = envs.step(idx, env_action)
            rows_t = first_row + idx
            observations[t + 1, rows_t] = encode_observations(space, next_obs)
            arrays["rewards"][t, rows_t] = rewards
            arrays["terminated"][t, rows_t] = terms
            arrays["truncated"][t, rows_t] = truncs
            arrays["mask"][t, rows_t] = 1.0
            if "success" in arrays:
                arrays["success"][t, rows_t] = info["success"]
            active[idx] = ~(terms | truncs)
            if not active.any():
                end = t + 1
                if stop_when_done:
                    break
    return end


class Sampler(ABC):
    """What every sampler backend shares: the family's spaces and horizon, and one generator.

    The generator (seeded once) draws the tasks, every phase's env reset seeds and the seed of
    the policy's action noise, always in that order, so backends that consume it the same way
    produce the same episodes, and a checkpoint of its state makes a resumed run exact.

    ``task_forward`` is how the policy runs with per-task parameters at every step: the
    generic ``meta_rl.functional.task_distribution`` unless a faster twin for the policy is
    handed in (``meta_rl.builders`` hands ``algorithms.closed_form.task_forward``).
    ``clip_actions`` (``train.clip_actions``) clips Box actions to the space before stepping
    (``action_bounds``), every backend alike.
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
        task_forward: TaskForward = task_distribution,
        clip_actions: bool = True,
    ) -> None:
        self.env_id = env_id
        self.task_forward = task_forward
        self.num_tasks = num_tasks
        self.episodes_per_task = episodes_per_task
        self.device = torch.device(device)
        self.env_kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            self.env_kwargs["max_episode_steps"] = max_episode_steps
        self._env, self.horizon = make_family(env_id, self.env_kwargs)  # spaces, task sampling
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.obs_dim = observation_dim(self.observation_space)
        self.clip_to = action_bounds(self.action_space, clip_actions)
        self.tracks_success = reports_success(self._env)  # episodes then carry ``success``
        self._rng = np.random.default_rng(seed)

    @property
    def batch_size(self) -> int:
        return self.num_tasks * self.episodes_per_task

    @property
    def unwrapped(self) -> gym.Env:
        """The family's base env, e.g. to call ``sample_tasks``."""
        return self._env.unwrapped

    def make_env(self) -> gym.Env:
        return gym.make(self.env_id, **self.env_kwargs)

    def sample_tasks(self, num_tasks: int | None = None) -> list[dict[str, Any]]:
        """Draw tasks from the family's distribution with the sampler's own generator."""
        return self.unwrapped.sample_tasks(num_tasks or self.num_tasks, self._rng)

    def rng_state(self) -> dict[str, Any]:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    def array_specs(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The episode arrays of one ``sample`` call (see ``episode_array_specs``)."""
        return episode_array_specs(
            self.horizon, self.batch_size, self.obs_dim, self.action_space, self.tracks_success
        )

    def empty_arrays(self) -> EpisodeArrays:
        specs = self.array_specs()
        return {name: np.zeros(shape, dtype) for name, (dtype, shape) in specs.items()}

    def phase_seeds(self, tasks: Sequence[dict[str, Any]]) -> tuple[np.ndarray, int]:
        """Env reset seeds (one per sub-env) and the action-noise seed of one sampling phase."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"sampler built for {self.num_tasks} tasks, got {len(tasks)}")
        reset_seeds = self._rng.integers(2**31, size=self.batch_size)
        return reset_seeds, int(self._rng.integers(2**62))

    @abstractmethod
    def sample(
        self, policy: nn.Module, params: Params, tasks: Sequence[dict[str, Any]]
    ) -> Episodes:
        """One episode per (task, episode) slot; ``params`` holds one parameter set per task."""

    def close(self) -> None:
        self._env.close()
