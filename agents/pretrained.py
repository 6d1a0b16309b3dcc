"""The MAML paper's comparison baselines, trained with SB3 PPO.

- *pretrained*: one policy trained on the whole task distribution, a new task drawn at random
  every episode (``RandomTaskWrapper``); it cannot tell the tasks apart, so it learns what is
  good on average, and is then fine-tuned with the same inner steps as the meta-learned policy.
- *oracle*: the same, but the task's parameters are appended to every observation
  (``TaskObservationWrapper``, reachable as ``oracle_env_id(env_id)``), so one policy can be
  optimal on every task without adapting: an upper reference, not a competitor.

Both come back as ``meta_rl.agents.sb3.SB3Actor`` (the actor half of the PPO policy as a plain
``forward(obs) -> Distribution`` module), so the evaluation adapts them with exactly the code
that adapts a meta-learned policy.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from meta_rl.agents.policies import ACTIVATIONS

ORACLE_NAMESPACE = "MetaRLOracle"


def task_vector(task: Mapping[str, Any], task_space: spaces.Dict) -> np.ndarray:
    """The task's values, flattened in the task space's key order, as float32."""
    parts = [np.asarray(task[key], dtype=np.float32).reshape(-1) for key in task_space.spaces]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def task_vector_dim(task_space: spaces.Dict) -> int:
    dims = 0
    for key, space in task_space.spaces.items():
        if isinstance(space, spaces.Discrete):
            dims += 1
        elif isinstance(space, spaces.Box):
            dims += int(np.prod(space.shape))
        else:
            raise TypeError(f"task space entry {key!r} must be Box or Discrete, got {space}")
    return dims


class TaskObservationWrapper(gym.ObservationWrapper):
    """Appends the current task's parameters to a 1-D Box observation (the oracle's input).

    It defines no ``task`` attribute of its own, so ``set_wrapper_attr("task", t)`` still
    reaches the family underneath and the next observation carries the new task.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.observation_space
        if not (isinstance(base, spaces.Box) and len(base.shape) == 1):
            raise TypeError(f"the oracle wrapper needs a 1-D Box observation space, got {base}")
        extra = task_vector_dim(env.unwrapped.task_space)
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(base.shape[0] + extra,), dtype=np.float32
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        task = task_vector(self.env.unwrapped.task, self.env.unwrapped.task_space)
        return np.concatenate([np.asarray(observation, dtype=np.float32), task])


class RandomTaskWrapper(gym.Wrapper):
    """Draws a fresh task from the family's distribution at every reset, from its own generator.

    An explicit ``options={"task": t}`` wins over the draw (so an evaluation can still pin one).
    """

    def __init__(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().__init__(env)
        self._rng = rng

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        options = dict(options or {})
        options.setdefault("task", self.env.unwrapped.sample_tasks(1, self._rng)[0])
        return self.env.reset(seed=seed, options=options)


def make_oracle_env(base_id: str, **kwargs: Any) -> gym.Env:
    """Entry point of the oracle ids: the base family (no time limit) with the task appended."""
    return TaskObservationWrapper(gym.make(base_id, disable_env_checker=True, **kwargs).unwrapped)


def oracle_env_id(env_id: str) -> str:
    """Register (once) and return ``MetaRLOracle/<Name>``: ``env_id`` with the task observed.

    Same time limit and constructor kwargs as ``env_id``, so a sampler builds it like any
    family; ``MetaRL/Navigation2D-v0`` -> ``MetaRLOracle/Navigation2D-v0``.
    """
    import meta_rl.envs  # noqa: F401  (registers the MetaRL/ families)

    base = gym.spec(env_id)
    oracle_id = f"{ORACLE_NAMESPACE}/{base.name}-v{base.version}"
    if oracle_id not in gym.envs.registry:
        gym.register(
            id=oracle_id,
            entry_point="meta_rl.agents.pretrained:make_oracle_env",
            max_episode_steps=base.max_episode_steps,
            kwargs={"base_id": base.id},
        )
    return oracle_id


@dataclass(frozen=True)
class PPOBaselineSpec:
    """Everything that determines a trained baseline (also the cache key of a saved one)."""

    env_id: str
    oracle: bool
    total_timesteps: int
    seed: int
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    n_envs: int = 8
    ppo_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "n_steps": 256,
            "batch_size": 256,
            "n_epochs": 10,
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "gae_lambda": 0.95,
        }
    )

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _vec_env(spec: PPOBaselineSpec, seed_seq: np.random.SeedSequence):
    from stable_baselines3.common.vec_env import DummyVecEnv

    env_id = oracle_env_id(spec.env_id) if spec.oracle else spec.env_id
    kwargs = dict(spec.env_kwargs)
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = spec.max_episode_steps

    def factory(child: np.random.SeedSequence):
        return lambda: RandomTaskWrapper(gym.make(env_id, **kwargs), np.random.default_rng(child))

    return DummyVecEnv([factory(child) for child in seed_seq.spawn(spec.n_envs)])


def train_ppo_baseline(spec: PPOBaselineSpec, callback: Any = None):
    """SB3 PPO on the family with a random task per episode (oracle: task in the observation).

    Seeding in one place: ``SeedSequence(seed)`` spawns the task generators of the sub-envs
    and the env-reset / global-RNG seed SB3 needs (its action sampling and minibatch shuffles
    use the global torch / numpy RNGs, restored afterwards). ``callback`` is handed to SB3's
    ``learn`` (e.g. to show progress); it must not draw random numbers.
    """
    from stable_baselines3 import PPO

    from meta_rl.agents.sb3 import seeded_global_rngs

    tasks_seq, run_seq = np.random.SeedSequence(spec.seed).spawn(2)
    run_seed = int(run_seq.generate_state(1)[0] % 2**31)
    env = _vec_env(spec, tasks_seq)
    env.seed(run_seed)
    with seeded_global_rngs(run_seed):
        model = PPO(
            "MlpPolicy",
            env,
            policy_kwargs={
                "net_arch": {"pi": list(spec.hidden_sizes), "vf": list(spec.hidden_sizes)},
                "activation_fn": ACTIVATIONS[spec.activation],
            },
            device="cpu",
            verbose=0,
            **spec.ppo_kwargs,
        )
        model.learn(total_timesteps=spec.total_timesteps, callback=callback)
    env.close()
    return model


def is_cached(spec: PPOBaselineSpec, path: str | Path) -> bool:
    """Whether ``path`` holds a baseline trained for exactly ``spec``."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return False
    return json.loads(meta_path.read_text(encoding="utf-8")).get("spec") == spec.to_json()


def load_or_train_ppo_baseline(spec: PPOBaselineSpec, path: str | Path, callback: Any = None):
    """(``SB3Actor``, info) for ``spec``: loaded from ``path`` if it was trained for the same
    spec, else trained (``callback`` goes to SB3's ``learn``) and saved there as soon as it is
    done (``path`` zip + ``path``.json with spec and cost). ``info["cached"]`` says which."""
    from stable_baselines3 import PPO

    from meta_rl.agents.sb3 import SB3Actor

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if is_cached(spec, path):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = PPO.load(path, device="cpu")
        return SB3Actor(model.policy), {**meta["info"], "cached": True}
    start = time.perf_counter()
    model = train_ppo_baseline(spec, callback)
    info = {
        "train_env_steps": int(model.num_timesteps),
        "train_wall_s": time.perf_counter() - start,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    meta_path.write_text(
        json.dumps({"spec": spec.to_json(), "info": info}, indent=1), encoding="utf-8"
    )
    return SB3Actor(model.policy), {**info, "cached": False}
