"""Meta-test evaluation: adaptation curves on held-out tasks, with confidence intervals.

A meta-learning claim is a curve: the mean return on tasks never seen in training after
0, 1, ..., K inner policy-gradient steps, against baselines evaluated the same way. Here every
method gets the same held-out tasks, the same environment-reset and action-noise stream (the
sampler generator is re-seeded identically before each method) and the same step-size
schedule, so differences between curves come from the initial parameters alone.

Held-out tasks. Training draws everything from ``np.random.default_rng(seed)``, i.e.
``SeedSequence(seed)`` with an empty spawn key. Evaluation draws from
``SeedSequence(seed, spawn_key=(EVAL_SPAWN_KEY,))``, which numpy hashes into an independent
stream: it is not a state training can reach (training never spawns, and ``spawn`` children
use keys 0, 1, 2, ... far below ``EVAL_SPAWN_KEY``). Its first child draws the tasks, its
second seeds the sampler (resets and action noise).

Protocol (as the MAML paper's evaluation scripts): sample ``episodes`` per task with the
current parameters, record their mean return, take one REINFORCE step on those same episodes
(advantages as in training), repeat; step ``k`` uses ``step_sizes[k]`` (alpha, then
``alpha * later_factor`` for the later steps, 1/2 by default as in the original scripts).

Success. For a family whose ``info`` has ``success`` (Meta-World) every curve also records,
per task and step, the fraction of the ``episodes`` that reached success at any step. This is
Meta-World's meta-test protocol (``metaworld.evaluation.metalearning_evaluation``: adapt on N
episodes of a held-out task, then evaluate the adapted policy on fresh episodes; it uses
N = 10 and 3 evaluation episodes) with N = ``episodes`` and the ``episodes`` sampled after
step k as step k's evaluation episodes; the tasks come from the benchmark's test split.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meta_rl.adaptation import AdvantageEstimator, adapt, detached
from meta_rl.algorithms import closed_form
from meta_rl.builders import advantage_estimator
from meta_rl.config import BASELINES, EvalSettings
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import Params, expand_to_tasks, policy_params
from meta_rl.samplers import Sampler, VectorSampler
from meta_rl.stats import confidence_interval
from meta_rl.tables import format_table

EVAL_SPAWN_KEY = 0x6D657461_74657374  # b"metatest": the held-out stream's spawn key
EVAL_DIR = "eval"
CSV_NAME = "adaptation.csv"
JSON_NAME = "adaptation.json"
PNG_NAME = "adaptation.png"

Task = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# held-out tasks and step sizes


def held_out_seed_sequence(seed: int) -> np.random.SeedSequence:
    """The evaluation root: same entropy as training, a spawn key training never uses."""
    return np.random.SeedSequence(seed, spawn_key=(EVAL_SPAWN_KEY,))


def held_out_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(task generator, sampler generator), both from the held-out root."""
    tasks_seq, sampler_seq = held_out_seed_sequence(seed).spawn(2)
    return np.random.default_rng(tasks_seq), np.random.default_rng(sampler_seq)


def held_out_tasks(sampler: Sampler, num_tasks: int, seed: int) -> list[Task]:
    """``num_tasks`` tasks of the sampler's family from the held-out stream of ``seed`` (from
    its test split, for a family that has one: ``TaskEnv.sample_held_out_tasks``)."""
    return sampler.unwrapped.sample_held_out_tasks(num_tasks, held_out_generators(seed)[0])


def step_sizes(alpha: float, steps: int, later_factor: float = 0.5) -> list[float]:
    """Inner step sizes for ``steps`` steps: ``alpha`` first, ``alpha * later_factor`` after."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return [alpha if k == 0 else alpha * later_factor for k in range(steps)]


# ---------------------------------------------------------------------------------------------
# one curve


@dataclass
class AdaptationCurve:
    """Per-task mean returns after each of 0..K inner steps for one method."""

    method: str
    step_sizes: list[float]  # K entries: the step size of step k+1
    task_returns: list[list[float]]  # [K+1][num_tasks] mean return over the task's episodes
    env_steps: int = 0
    wall_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # training budget etc., for tables
    # [K+1][num_tasks] fraction of the task's episodes that reached success; None for a
    # family whose info has no ``success``
    task_success: list[list[float]] | None = None

    def mean_ci(self, level: float = 0.95) -> list[tuple[float, float]]:
        return [confidence_interval(r, level) for r in self.task_returns]

    def success_ci(self, level: float = 0.95) -> list[tuple[float, float]]:
        """Mean success rate after each step and its interval over tasks (empty: none)."""
        return [confidence_interval(r, level) for r in self.task_success or []]

    def to_dict(self) -> dict[str, Any]:
        stats = self.mean_ci()
        return {
            "method": self.method,
            "step_sizes": self.step_sizes,
            "mean": [m for m, _ in stats],
            "ci95": [h for _, h in stats],
            "task_returns": self.task_returns,
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "info": self.info,
            **_success_dict(self),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptationCurve:
        return cls(
            method=data["method"],
            step_sizes=list(data["step_sizes"]),
            task_returns=[list(r) for r in data["task_returns"]],
            env_steps=int(data.get("env_steps", 0)),
            wall_s=float(data.get("wall_s", 0.0)),
            info=dict(data.get("info", {})),
            task_success=data.get("task_success"),
        )


def _success_dict(curve: AdaptationCurve) -> dict[str, Any]:
    if curve.task_success is None:
        return {}
    stats = curve.success_ci()
    return {
        "success_mean": [m for m, _ in stats],
        "success_ci95": [h for _, h in stats],
        "task_success": curve.task_success,
    }


def _task_success(episodes: Episodes) -> list[float] | None:
    return None if episodes.success is None else episodes.task_success().tolist()


def _success_curve(per_step: list[list[float] | None]) -> list[list[float]] | None:
    """Per-step success lists, or None when the family reports no success."""
    if any(step is None for step in per_step):
        return None
    return [step for step in per_step if step is not None]


def adaptation_curve(
    method: str,
    policy: nn.Module,
    sampler: Sampler,
    tasks: Sequence[Task],
    sizes: Sequence[float],
    advantages: AdvantageEstimator,
    sampler_state: dict[str, Any],
    params: Params | None = None,
) -> AdaptationCurve:
    """Adapt ``policy`` (or ``params``) on every task for ``len(sizes)`` steps; record returns.

    The sampler generator is set to ``sampler_state`` first, so two methods evaluated with the
    same state see the same resets and action noise. Adaptation is first-order by nature here
    (nothing is differentiated through it) and never touches the module's own parameters.
    """
    start = time.perf_counter()
    sampler.set_rng_state(sampler_state)
    shared = params if params is not None else policy_params(policy)
    current = detached(expand_to_tasks({k: v.detach() for k, v in shared.items()}, len(tasks)))
    returns: list[list[float]] = []
    success: list[list[float] | None] = []
    env_steps = 0
    for k in range(len(sizes) + 1):
        episodes = sampler.sample(policy, current, tasks)
        env_steps += episodes.num_steps
        returns.append(episodes.episode_returns().mean(dim=1).cpu().double().tolist())
        success.append(_task_success(episodes))
        if k < len(sizes):
            adv, _ = advantages(episodes)
            stepped = adapt(
                policy, current, InnerBatch(episodes, adv), sizes[k], create_graph=False
            )
            current = detached(stepped)
    wall_s = time.perf_counter() - start
    return AdaptationCurve(
        method, list(sizes), returns, env_steps, wall_s, task_success=_success_curve(success)
    )


def learner_curve(
    method: str,
    config: Any,
    policy: nn.Module,
    sampler: Sampler,
    tasks: Sequence[Task],
    sampler_state: dict[str, Any],
) -> AdaptationCurve:
    """Adaptation with the run's own meta-learner inner loop (e.g. Reptile's k Adam steps).

    ``adaptation_curve`` applies the MAML paper's protocol (plain policy-gradient steps) to
    every method; a Reptile initialisation is meant for its own inner optimiser, so this curve
    is what Reptile promises. Same tasks and sampler stream as every other curve.
    """
    from meta_rl.builders import build_meta_learner

    start = time.perf_counter()
    sampler.set_rng_state(sampler_state)
    learner = build_meta_learner(config, policy, sampler)
    rollouts = learner.collect(tasks)
    returns = [
        episodes.episode_returns().mean(dim=1).cpu().double().tolist()
        for episodes in rollouts.step_episodes
    ]
    sizes = [float(config.algo.inner_lr)] * (len(returns) - 1)
    success = _success_curve([_task_success(e) for e in rollouts.step_episodes])
    wall_s = time.perf_counter() - start
    return AdaptationCurve(method, sizes, returns, rollouts.env_steps, wall_s, task_success=success)


# ---------------------------------------------------------------------------------------------
# evaluating a run directory


DEFAULT_EVAL = EvalSettings()


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(config, policy state_dict) of a run: its config.yaml and latest checkpoint."""
    from meta_rl.checkpoint import find_latest, load_checkpoint
    from meta_rl.config import load_config

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    latest = find_latest(run_dir)
    if latest is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to evaluate")
    state = load_checkpoint(latest, map_location=device)
    return config, state["trainer"]["policy"]


def make_eval_sampler(
    config: Any,
    num_tasks: int,
    episodes: int,
    env_id: str | None = None,
    device: torch.device | str = "cpu",
) -> VectorSampler:
    """An in-process sampler for the run's family (or ``env_id``, e.g. the oracle's)."""
    return VectorSampler(
        env_id or config.env.id,
        num_tasks,
        episodes,
        seed=0,  # replaced by the held-out sampler state before every curve
        env_kwargs=config.env.kwargs,
        max_episode_steps=config.env.max_episode_steps,
        device=device,
        task_forward=closed_form.task_forward,  # as build_sampler: the same episodes
        clip_actions=config.train.clip_actions,
    )


def evaluate_run(
    run_dir: str | Path,
    settings: EvalSettings = DEFAULT_EVAL,
    *,
    out_dir: str | Path | None = None,
    method: str | None = None,
    baseline_cache: str | Path | None = None,
    baseline_overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[AdaptationCurve]:
    """Evaluate a run's meta-learned policy (and baselines) on held-out tasks; write results.

    Writes ``adaptation.csv``, ``adaptation.json``, ``adaptation.png`` and TensorBoard scalars
    to ``out_dir`` (default ``RUN_DIR/eval``). SB3 baselines are trained once and cached as
    ``<baseline_cache>/<name>.zip`` (default: ``out_dir``); ``baseline_overrides`` replaces
    fields of their ``meta_rl.agents.pretrained.PPOBaselineSpec`` (``n_envs``, ``ppo_kwargs``, ...).
    Their budget is ``settings.baseline_timesteps``, by default the run's own training env
    steps (``trained_env_steps``), so a pretrained policy and the meta-learner it is compared
    with have seen as many env steps.
    """
    from meta_rl.builders import build_policy

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / EVAL_DIR
    say = progress or (lambda message: None)
    config, policy_state = load_run(run_dir)
    if settings.clip_actions is not None:  # how every method is scored, not how it trained
        train = dataclasses.replace(config.train, clip_actions=settings.clip_actions)
        config = dataclasses.replace(config, train=train)
    seed = config.train.seed if settings.seed is None else settings.seed
    alpha = config.algo.inner_lr if settings.step_size is None else settings.step_size
    sizes = step_sizes(alpha, settings.steps, settings.later_factor)
    sampler = make_eval_sampler(config, settings.tasks, settings.episodes)
    tasks = held_out_tasks(sampler, settings.tasks, seed)
    sampler_state = held_out_generators(seed)[1].bit_generator.state
    estimator = advantage_estimator(config)
    curves: list[AdaptationCurve] = []
    try:
        policy = build_policy(config, sampler, config.train.seed)
        policy.load_state_dict(policy_state)
        name = method or config.algo.name
        say(f"evaluating {name} on {len(tasks)} held-out tasks")
        curves.append(
            adaptation_curve(name, policy, sampler, tasks, sizes, estimator, sampler_state)
        )
        if config.algo.name == "reptile":
            say(f"evaluating {name} with its own inner loop")
            own = learner_curve(
                f"{name} (own inner loop)", config, policy, sampler, tasks, sampler_state
            )
            curves.append(own)
        cache_dir = Path(baseline_cache) if baseline_cache else out
        if settings.baseline_jobs > 1:
            pretrain_baselines(
                run_dir, settings, cache_dir=cache_dir, overrides=baseline_overrides, progress=say
            )
        budget = settings.baseline_timesteps
        for baseline in settings.baselines:
            say(f"evaluating baseline {baseline}")
            if baseline != "random" and budget is None:
                budget = trained_env_steps(run_dir)  # as many env steps as the meta-learner
            curves.append(
                evaluate_baseline(
                    baseline,
                    config,
                    sampler,
                    tasks,
                    sizes,
                    sampler_state,
                    timesteps=budget or 0,
                    cache_dir=cache_dir,
                    overrides=baseline_overrides,
                    progress=progress,
                )
            )
    finally:
        sampler.close()
    meta = {
        "run_dir": str(run_dir),
        "env_id": config.env.id,
        "seed": seed,
        "eval_spawn_key": EVAL_SPAWN_KEY,
        "num_tasks": settings.tasks,
        "episodes_per_task": settings.episodes,
        "tasks": tasks,
    }
    if any(curve.task_success is not None for curve in curves):
        meta["success_protocol"] = (
            f"adapt on {settings.episodes} episodes per held-out task and step, evaluate on the "
            f"{settings.episodes} episodes sampled after each step; success = reached at any step"
        )
    write_results(out, curves, meta)
    return curves


def trained_env_steps(run_dir: str | Path) -> int:
    """Env steps a run's meta-training consumed (its last ``progress.csv`` row)."""
    with (Path(run_dir) / "progress.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run_dir}: progress.csv has no iteration yet")
    return int(rows[-1]["env_steps"])


def ppo_baseline_spec(
    name: str, config: Any, timesteps: int, overrides: Mapping[str, Any] | None = None
) -> Any:
    """The ``PPOBaselineSpec`` of SB3 baseline ``name`` (pretrained | oracle) for a run's config:
    the family's RL Zoo settings (else the run's network), ``timesteps`` env steps (the
    oracle's cap), ``overrides`` replacing spec fields."""
    from meta_rl.agents.pretrained import baseline_spec

    if name == "oracle":
        _check_oracle(config)
    spec = baseline_spec(
        config.env.id,
        name == "oracle",
        timesteps,
        config.train.seed,
        hidden_sizes=tuple(config.policy.hidden_sizes),
        activation=config.policy.activation,
        env_kwargs=dict(config.env.kwargs),
        max_episode_steps=config.env.max_episode_steps,
    )
    return dataclasses.replace(spec, **dict(overrides or {}))


def _check_oracle(config: Any) -> None:
    """A config error when the family cannot show an oracle its task (Meta-World ML10)."""
    import gymnasium as gym

    from meta_rl.agents.pretrained import oracle_env_id
    from meta_rl.config import ConfigError

    try:
        gym.make(oracle_env_id(config.env.id), **config.env.kwargs).close()
    except ValueError as exc:
        raise ConfigError(f"baseline oracle: {exc}") from None


def pretrain_baselines(
    run_dir: str | Path,
    settings: EvalSettings,
    *,
    cache_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Train the SB3 baselines that ``evaluate_run`` will ask for, ``settings.baseline_jobs``
    at a time (``evaluate_run`` calls it when that is more than one).

    SB3 PPO updates on minibatches of 64 keep one core busy each, so on a machine with cores
    to spare the pretrained and oracle policies train side by side (one torch thread per
    process, spawned: no inherited thread pools). Each is saved under the cache name and spec
    ``evaluate_run`` computes, which then loads it instead of training; a cached one is skipped.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from meta_rl.agents.pretrained import cache_path, is_cached

    say = progress or (lambda message: None)
    config, _ = load_run(run_dir)
    budget = settings.baseline_timesteps or trained_env_steps(run_dir)
    todo = []
    for name in settings.baselines:
        if name in ("pretrained", "oracle"):
            spec = ppo_baseline_spec(name, config, budget, overrides)
            path = cache_path(cache_dir, name, spec)
            if not is_cached(spec, path):
                todo.append((name, spec, path))
    if not todo:
        return
    names = ", ".join(name for name, _, _ in todo)
    workers = max(1, min(settings.baseline_jobs, len(todo)))
    say(f"baselines {names}: SB3 PPO, {workers} at a time, saved under {cache_dir}")
    if workers == 1:  # in this process, as evaluate_run would
        for job in todo:
            _train_baseline_job(*job)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_train_baseline_job, *job) for job in todo]
        for future in futures:
            future.result()


def _train_baseline_job(name: str, spec: Any, path: Path) -> None:
    """One ``pretrain_baselines`` job (in a worker process: with one torch thread)."""
    from multiprocessing import parent_process

    from meta_rl.agents.pretrained import load_or_train_ppo_baseline

    if parent_process() is not None:
        torch.set_num_threads(1)
    load_or_train_ppo_baseline(spec, path, _ppo_progress(name, spec.total_timesteps))


def evaluate_baseline(
    name: str,
    config: Any,
    sampler: Sampler,
    tasks: Sequence[Task],
    sizes: Sequence[float],
    sampler_state: dict[str, Any],
    *,
    timesteps: int,
    cache_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> AdaptationCurve:
    """One baseline's curve on the same tasks, sampler stream and step sizes as the run.

    An SB3 baseline shows its training progress (a bar on a terminal, lines otherwise) and
    is saved as soon as it is trained, so an interrupted evaluation keeps what finished."""
    say = progress or (lambda message: None)
    from meta_rl.builders import build_policy

    estimator = advantage_estimator(config)
    if name == "random":
        policy = build_policy(config, sampler, config.train.seed)  # meta-training skipped
        curve = adaptation_curve(name, policy, sampler, tasks, sizes, estimator, sampler_state)
        curve.info = {"train_env_steps": 0, "train_wall_s": 0.0}
        return curve
    if name not in ("pretrained", "oracle"):
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    from meta_rl.agents.pretrained import (
        cache_path,
        is_cached,
        load_or_train_ppo_baseline,
        oracle_env_id,
    )

    oracle = name == "oracle"
    spec = ppo_baseline_spec(name, config, timesteps, overrides)
    path = cache_path(cache_dir, name, spec)
    if is_cached(spec, path):
        say(f"baseline {name}: reusing {path}, trained for the same settings before")
    else:
        steps = spec.total_timesteps
        what = "at most " if spec.stop_when_flat else ""
        say(f"baseline {name}: SB3 PPO for {what}{steps:,} env steps, saved to {path} when done")
    actor, info = load_or_train_ppo_baseline(spec, path, _ppo_progress(name, spec.total_timesteps))
    info = {k: v for k, v in info.items() if k != "cached"}
    if not oracle:
        curve = adaptation_curve(name, actor, sampler, tasks, sizes, estimator, sampler_state)
    else:
        oracle_sampler = make_eval_sampler(
            config, len(tasks), sampler.episodes_per_task, oracle_env_id(config.env.id)
        )
        try:
            curve = adaptation_curve(
                name, actor, oracle_sampler, tasks, sizes, estimator, sampler_state
            )
        finally:
            oracle_sampler.close()
    curve.info = info
    return curve


# ---------------------------------------------------------------------------------------------
# output


CSV_COLUMNS = (
    "method",
    "step",
    "step_size",
    "mean_return",
    "ci95",
    "ci95_low",
    "ci95_high",
    "num_tasks",
)
SUCCESS_COLUMNS = ("success_rate", "success_ci95")  # added when the family reports success


def _ppo_progress(name: str, total: int) -> Any:
    """An SB3 callback that shows PPO's env steps through ``meta_rl.progress.Progress``."""
    from stable_baselines3.common.callbacks import BaseCallback

    from meta_rl.progress import Progress

    class PPOProgress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = Progress(total, unit="env steps", desc=f"baseline {name}")

        def _on_rollout_end(self) -> None:
            self.bar.update(self.num_timesteps - self.bar.done)

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return PPOProgress()


def write_results(out: Path, curves: Sequence[AdaptationCurve], meta: dict[str, Any]) -> None:
    """adaptation.csv (one row per method and step), .json (everything), .png, TensorBoard."""
    from meta_rl.plotting import plot_curves

    out.mkdir(parents=True, exist_ok=True)
    with_success = any(curve.task_success is not None for curve in curves)
    with (out / CSV_NAME).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS + SUCCESS_COLUMNS * with_success)
        writer.writeheader()
        for curve in curves:
            success = curve.success_ci()
            for step, (mean, half) in enumerate(curve.mean_ci()):
                extra = dict(zip(SUCCESS_COLUMNS, success[step], strict=True)) if success else {}
                writer.writerow(
                    extra
                    | {
                        "method": curve.method,
                        "step": step,
                        "step_size": curve.step_sizes[step - 1] if step else 0.0,
                        "mean_return": mean,
                        "ci95": half,
                        "ci95_low": mean - half,
                        "ci95_high": mean + half,
                        "num_tasks": len(curve.task_returns[step]),
                    }
                )
    payload = {**meta, "curves": [c.to_dict() for c in curves]}
    (out / JSON_NAME).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    title = f"{meta.get('env_id', '')}: {meta.get('num_tasks', '?')} held-out tasks"
    plot_curves([(c.method, c) for c in curves], out / PNG_NAME, title=title)
    _log_tensorboard(out, curves)


def _log_tensorboard(out: Path, curves: Sequence[AdaptationCurve]) -> None:
    """Curve as scalars with step = number of inner steps (``eval/<method>/return``)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out))
    try:
        for curve in curves:
            for step, (mean, half) in enumerate(curve.mean_ci()):
                writer.add_scalar(f"eval/{curve.method}/return", mean, step)
                writer.add_scalar(f"eval/{curve.method}/ci95", half, step)
            for step, (mean, _) in enumerate(curve.success_ci()):
                writer.add_scalar(f"eval/{curve.method}/success", mean, step)
    finally:
        writer.close()


def load_results(path: str | Path) -> tuple[dict[str, Any], list[AdaptationCurve]]:
    """Read a run dir, its eval dir, or an adaptation.json back into curves."""
    path = Path(path)
    for candidate in (path, path / JSON_NAME, path / EVAL_DIR / JSON_NAME):
        if candidate.is_file():
            data = json.loads(candidate.read_text(encoding="utf-8"))
            curves = [AdaptationCurve.from_dict(c) for c in data.pop("curves")]
            return data, curves
    raise FileNotFoundError(f"{path}: no {JSON_NAME} (run `meta-rl evaluate` first)")


def curves_table(curves: Sequence[AdaptationCurve]) -> str:
    """Plain-text table: one row per method, ``mean ± ci95`` after each inner step."""
    steps = max((len(c.task_returns) for c in curves), default=0)
    header = ["method", *(f"step {k}" for k in range(steps))]
    rows = [[c.method, *(f"{m:.2f} ± {h:.2f}" for m, h in c.mean_ci())] for c in curves]
    tasks = sorted({len(c.task_returns[0]) for c in curves if c.task_returns})
    count = f"{tasks[0]} " if len(tasks) == 1 else ""
    note = (
        f"mean return over {count}held-out tasks ± the half-width of its 95 % confidence "
        "interval (Student t over tasks)"
    )
    table = format_table(header, rows, align="l" + "r" * steps) + "\n" + note
    with_success = [c for c in curves if c.task_success is not None]
    if not with_success:
        return table
    rows = [[c.method, *(f"{m:.1%} ± {h:.1%}" for m, h in c.success_ci())] for c in with_success]
    note = (
        "success rate: fraction of a task's episodes that reached success at any step, mean "
        "over held-out tasks ± the half-width of its 95 % confidence interval"
    )
    return "\n\n".join([table, format_table(header, rows, align="l" + "r" * steps), note])
