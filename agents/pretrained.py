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
import hashlib
import json
import math
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
    """Appends the current task to a 1-D Box observation (the oracle's input).

    What is appended: the family's ``oracle_features()`` when it defines one (with
    ``oracle_features_dim``; e.g. Meta-World, whose task is an index into its own lists, shows
    the goal it hides), else the task's parameters as a vector (``task_vector``).
    It defines no ``task`` attribute of its own, so ``set_wrapper_attr("task", t)`` still
    reaches the family underneath and the next observation carries the new task.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.observation_space
        if not (isinstance(base, spaces.Box) and len(base.shape) == 1):
            raise TypeError(f"the oracle wrapper needs a 1-D Box observation space, got {base}")
        family = env.unwrapped
        self._features = getattr(family, "oracle_features", None)
        extra = (
            family.oracle_features_dim
            if self._features is not None
            else task_vector_dim(family.task_space)
        )
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(base.shape[0] + extra,), dtype=np.float32
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        family = self.env.unwrapped
        if self._features is not None:
            task = np.asarray(self._features(), dtype=np.float32)
        else:
            task = task_vector(family.task, family.task_space)
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


# SB3 PPO settings tuned by the RL Baselines3 Zoo for the MuJoCo bodies our families use
# (https://github.com/DLR-RM/rl-baselines3-zoo, hyperparams/ppo.yml, as of commit 208b6fd).
# Settings the zoo leaves out are SB3 PPO's defaults. `n_envs` is the zoo's 1: PPO's rollout is
# n_envs * n_steps env steps, which the zoo tuned together with batch_size.
ZOO_PPO: dict[str, dict[str, Any]] = {
    "HalfCheetah": {  # zoo `HalfCheetah-v4` ("# Tuned")
        "normalize": True,  # zoo: normalize: true (VecNormalize, observations and rewards)
        "n_envs": 1,  # zoo: n_envs: 1
        "hidden_sizes": (256, 256),  # zoo: net_arch=dict(pi=[256, 256], vf=[256, 256])
        "activation": "relu",  # zoo: activation_fn=nn.ReLU
        "log_std_init": -2.0,  # zoo: log_std_init=-2
        "ortho_init": False,  # zoo: ortho_init=False
        "ppo_kwargs": {
            "n_steps": 512,  # zoo: n_steps: 512
            "batch_size": 64,  # zoo: batch_size: 64
            "n_epochs": 20,  # zoo: n_epochs: 20
            "learning_rate": 2.0633e-05,  # zoo: learning_rate: 2.0633e-05
            "gamma": 0.98,  # zoo: gamma: 0.98
            "gae_lambda": 0.92,  # zoo: gae_lambda: 0.92
            "clip_range": 0.1,  # zoo: clip_range: 0.1
            "ent_coef": 0.000401762,  # zoo: ent_coef: 0.000401762
            "vf_coef": 0.58096,  # zoo: vf_coef: 0.58096
            "max_grad_norm": 0.8,  # zoo: max_grad_norm: 0.8
        },
    },
    "Ant": {  # zoo `Ant-v4` (its tuned block is commented out there): normalize, else defaults
        "normalize": True,  # zoo: normalize: true
        "n_envs": 1,  # zoo default n_envs: 1
        "hidden_sizes": (64, 64),  # SB3 PPO MlpPolicy default: pi=[64, 64], vf=[64, 64]
        "activation": "tanh",  # SB3 MlpPolicy default: nn.Tanh
        "log_std_init": 0.0,  # SB3 default
        "ortho_init": True,  # SB3 default
        "ppo_kwargs": {
            "n_steps": 2048,  # SB3 PPO default
            "batch_size": 64,  # SB3 PPO default
            "n_epochs": 10,  # SB3 PPO default
            "learning_rate": 3e-4,  # SB3 PPO default
            "gamma": 0.99,  # SB3 PPO default
            "gae_lambda": 0.95,  # SB3 PPO default
        },
    },
    "Reacher": {  # zoo `Reacher-v2` ("# Tuned" block of the MuJoCo envs)
        "normalize": True,  # zoo: normalize: true
        "n_envs": 1,  # zoo: n_envs: 1
        "hidden_sizes": (64, 64),  # SB3 MlpPolicy default (the zoo sets no net_arch)
        "activation": "tanh",  # SB3 MlpPolicy default
        "log_std_init": 0.0,  # SB3 default
        "ortho_init": True,  # SB3 default
        "ppo_kwargs": {
            "n_steps": 512,  # zoo: n_steps: 512
            "batch_size": 32,  # zoo: batch_size: 32
            "n_epochs": 5,  # zoo: n_epochs: 5
            "learning_rate": 0.000104019,  # zoo: learning_rate: 0.000104019
            "gamma": 0.9,  # zoo: gamma: 0.9
            "gae_lambda": 1.0,  # zoo: gae_lambda: 1.0
            "clip_range": 0.3,  # zoo: clip_range: 0.3
            "ent_coef": 7.52585e-08,  # zoo: ent_coef: 7.52585e-08
            "vf_coef": 0.950368,  # zoo: vf_coef: 0.950368
            "max_grad_norm": 0.9,  # zoo: max_grad_norm: 0.9
        },
    },
}


def zoo_body(env_id: str) -> str | None:
    """``"HalfCheetah"``, ``"Ant"`` or ``"Reacher"`` when the family is that Gymnasium body."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

    import meta_rl.envs  # noqa: F401  (registers the MetaRL/ families)

    entry = gym.spec(env_id).entry_point
    if isinstance(entry, str):
        from gymnasium.envs.registration import load_env_creator

        entry = load_env_creator(entry)
    bodies = {"HalfCheetah": HalfCheetahEnv, "Ant": AntEnv, "Reacher": ReacherEnv}
    for body, cls in bodies.items():
        if isinstance(entry, type) and issubclass(entry, cls):
            return body
    return None


@dataclass(frozen=True)
class FlatStop:
    """When the oracle's learning curve has flattened (its stopping criterion).

    Training is cut into chunks of ``every`` env steps; a chunk's score is the mean return of
    the training episodes that ended in it (raw rewards, before any normalisation). With a
    window of the last quarter of the chunks so far (``window_fraction``, at least
    ``patience`` chunks), training stops once the median score of the last window rose above
    the median of the window before it by less than ``tolerance`` of the whole gain (that last
    median minus the first chunk's score), and never before ``min_fraction`` of the cap (the
    spec's ``total_timesteps``). Medians over a window that grows with training, not the best
    single chunk: PPO's chunk scores are noisy (one lucky chunk followed by three ordinary
    ones stopped a Meta-World push oracle that was still rising fast), and the Ant sits on an
    early plateau before it learns. A curve that never rose trains on to the cap; a run that
    reaches the cap without flattening says so.
    """

    every: int = 20_000
    patience: int = 3
    tolerance: float = 0.05
    min_fraction: float = 0.5
    window_fraction: float = 0.25

    def criterion(self) -> str:
        """The rule in words, for reports (from the fields, so it cannot drift from them)."""
        return (
            f"the median chunk score of the last {self.window_fraction:.0%} of training rose by "
            f"< {self.tolerance:.0%} of the whole gain over the {self.window_fraction:.0%} "
            f"before, after {self.min_fraction:.0%} of its cap at least"
        )

    def flat(self, scores: list[float], trained_fraction: float = 1.0) -> bool:
        """Whether the curve ``scores`` is flat after ``trained_fraction`` of the cap."""
        window = max(self.patience, math.ceil(len(scores) * self.window_fraction))
        if len(scores) < 2 * window or trained_fraction < self.min_fraction:
            return False
        last = float(np.median(scores[-window:]))
        before = float(np.median(scores[-2 * window : -window]))
        gained = last - scores[0]
        return bool(gained > 0 and last - before < self.tolerance * gained)


def curve_chunk(total_timesteps: int) -> int:
    """Env steps per point of a baseline's learning curve (and of the oracle's flatness test):
    ``FlatStop.every``, or a tenth of a shorter budget."""
    return min(FlatStop.every, max(total_timesteps // 10, 1))


@dataclass(frozen=True)
class PPOBaselineSpec:
    """Everything that determines a trained baseline (also the cache key of a saved one)."""

    env_id: str
    oracle: bool
    total_timesteps: int  # the budget; with stop_when_flat, the cap
    seed: int
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    n_envs: int = 8
    normalize: bool = False  # VecNormalize: observations and rewards
    log_std_init: float = 0.0
    ortho_init: bool = True
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
    stop_when_flat: FlatStop | None = None
    source: str = "meta-rl defaults (no RL Zoo entry for this body)"

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def cache_key(self) -> str:
        """A digest of the spec and of the library versions that train it."""
        from importlib.metadata import version

        libraries = {name: version(name) for name in _TRAINING_LIBRARIES}
        text = json.dumps({"spec": self.to_json(), "versions": libraries}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_TRAINING_LIBRARIES = ("stable-baselines3", "torch", "gymnasium", "mujoco", "numpy")


def baseline_spec(
    env_id: str, oracle: bool, total_timesteps: int, seed: int, **fallback: Any
) -> PPOBaselineSpec:
    """The spec of a family's baseline: the RL Zoo's tuned settings for its body when there
    are some (``ZOO_PPO``), else ``fallback`` (e.g. the run's network); the oracle stops when
    its learning curve is flat (``FlatStop``), ``total_timesteps`` being its cap."""
    body = zoo_body(env_id)
    settings = dict(fallback)
    if body is not None:
        settings = {**settings, **ZOO_PPO[body], "source": f"RL Baselines3 Zoo, {body}"}
    every = curve_chunk(total_timesteps)
    return PPOBaselineSpec(
        env_id=env_id,
        oracle=oracle,
        total_timesteps=total_timesteps,
        seed=seed,
        stop_when_flat=FlatStop(every=every) if oracle else None,
        **settings,
    )


def _vec_env(spec: PPOBaselineSpec, seed_seq: np.random.SeedSequence):
    """The training envs: a random task per episode, episode returns recorded before any
    normalisation (``VecMonitor``), then ``VecNormalize`` if the spec asks for it."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

    env_id = oracle_env_id(spec.env_id) if spec.oracle else spec.env_id
    kwargs = dict(spec.env_kwargs)
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = spec.max_episode_steps

    def factory(child: np.random.SeedSequence):
        return lambda: RandomTaskWrapper(gym.make(env_id, **kwargs), np.random.default_rng(child))

    env = VecMonitor(DummyVecEnv([factory(child) for child in seed_seq.spawn(spec.n_envs)]))
    if spec.normalize:
        env = VecNormalize(env, gamma=spec.ppo_kwargs.get("gamma", 0.99))
    return env


def _training_curve(stop: FlatStop | None, every: int, cap: int, callback: Any):
    """An SB3 callback that scores each chunk of ``every`` env steps (mean return of the
    episodes that ended in it: the learning curve), stops training when ``stop`` says the
    curve is flat (``cap``: the env steps it trains at most), and forwards every event to
    ``callback``."""
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    class TrainingCurve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.scores: list[float] = []
            self.chunk_ends: list[int] = []
            self.flattened = False
            self._returns: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self._returns.append(float(info["episode"]["r"]))
            return not self.flattened

        def _on_rollout_end(self) -> None:
            last = self.chunk_ends[-1] if self.chunk_ends else 0
            if self._returns and self.num_timesteps - last >= every:
                self.scores.append(float(np.mean(self._returns)))
                self.chunk_ends.append(int(self.num_timesteps))
                self._returns = []
                self.flattened = stop is not None and stop.flat(
                    self.scores, self.num_timesteps / cap
                )

    curve = TrainingCurve()
    return curve, CallbackList([curve, *([callback] if callback is not None else [])])


def train_ppo_baseline(spec: PPOBaselineSpec, callback: Any = None):
    """SB3 PPO on the family with a random task per episode (oracle: task in the observation).

    Seeding in one place: ``SeedSequence(seed)`` spawns the task generators of the sub-envs
    and the env-reset / global-RNG seed SB3 needs (its action sampling and minibatch shuffles
    use the global torch / numpy RNGs, restored afterwards). ``callback`` is handed to SB3's
    ``learn`` (e.g. to show progress); it must not draw random numbers. Returns the model, its
    ``VecNormalize`` (or None) and the training curve (``scores``, ``chunk_ends``,
    ``flattened``); with ``spec.stop_when_flat`` training ends as soon as it is flat.
    """
    from stable_baselines3 import PPO

    from meta_rl.agents.sb3 import seeded_global_rngs

    tasks_seq, run_seq = np.random.SeedSequence(spec.seed).spawn(2)
    run_seed = int(run_seq.generate_state(1)[0] % 2**31)
    env = _vec_env(spec, tasks_seq)
    env.seed(run_seed)
    stop = spec.stop_when_flat
    every = stop.every if stop is not None else curve_chunk(spec.total_timesteps)
    curve, callbacks = _training_curve(stop, every, spec.total_timesteps, callback)
    with seeded_global_rngs(run_seed):
        model = PPO(
            "MlpPolicy",
            env,
            policy_kwargs={
                "net_arch": {"pi": list(spec.hidden_sizes), "vf": list(spec.hidden_sizes)},
                "activation_fn": ACTIVATIONS[spec.activation],
                "log_std_init": spec.log_std_init,
                "ortho_init": spec.ortho_init,
            },
            device="cpu",
            verbose=0,
            **spec.ppo_kwargs,
        )
        model.learn(total_timesteps=spec.total_timesteps, callback=callbacks)
    env.close()
    normalizer = env if spec.normalize else None
    return model, normalizer, curve


def cache_path(cache_dir: str | Path, name: str, spec: PPOBaselineSpec) -> Path:
    """``<cache_dir>/<name>-<digest>.zip``: one file per spec, so specs never evict each other."""
    return Path(cache_dir) / f"{name}-{spec.cache_key()}.zip"


def is_cached(spec: PPOBaselineSpec, path: str | Path) -> bool:
    """Whether ``path`` holds a baseline trained for exactly ``spec``."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return False
    return json.loads(meta_path.read_text(encoding="utf-8")).get("spec") == spec.to_json()


def _actor(model: Any, normalization: Mapping[str, Any] | None):
    from meta_rl.agents.sb3 import NormalizedObservations, SB3Actor

    actor = SB3Actor(model.policy)
    return actor if normalization is None else NormalizedObservations(actor, **normalization)


def load_or_train_ppo_baseline(spec: PPOBaselineSpec, path: str | Path, callback: Any = None):
    """(policy, info) for ``spec``: loaded from ``path`` if it was trained for the same spec,
    else trained (``callback`` goes to SB3's ``learn``) and saved there as soon as it is done
    (``path`` zip + ``path``.json with the spec, the frozen observation normalisation, the
    training curve and its cost). The policy is an ``SB3Actor``, behind
    ``NormalizedObservations`` when the spec normalises. ``info["cached"]`` says which."""
    from stable_baselines3 import PPO

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if is_cached(spec, path):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = PPO.load(path, device="cpu")
        return _actor(model, meta.get("normalization")), {**meta["info"], "cached": True}
    start = time.perf_counter()
    model, normalizer, curve = train_ppo_baseline(spec, callback)
    normalization = None
    if normalizer is not None:
        rms = normalizer.obs_rms
        normalization = {
            "mean": rms.mean.tolist(),
            "var": rms.var.tolist(),
            "clip": float(normalizer.clip_obs),
            "epsilon": float(normalizer.epsilon),
        }
    info = {
        "train_env_steps": int(model.num_timesteps),
        "train_wall_s": time.perf_counter() - start,
        "settings_source": spec.source,
        "curve_scores": curve.scores,
        "curve_env_steps": curve.chunk_ends,
        "stopped": (
            "flat" if curve.flattened else ("cap" if spec.stop_when_flat is not None else "budget")
        ),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    meta = {"spec": spec.to_json(), "normalization": normalization, "info": info}
    meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return _actor(model, normalization), {**info, "cached": False}
