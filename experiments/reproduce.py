"""Reproduce the MAML paper's RL comparisons on one benchmark, end to end.

    python experiments/reproduce.py --benchmark navigation2d            # 2-core budget
    python experiments/reproduce.py --benchmark halfcheetah_dir --budget paper

Stages: meta-train MAML-TRPO (and Reptile when its config exists), train the SB3 PPO
"pretrained" and "oracle" baselines, evaluate every method on the same held-out tasks with
the same inner steps (``meta_rl.evaluation``), then write ``<results-dir>/<benchmark>.md``
(table), ``.csv`` and ``.png``. Every stage reuses what an earlier invocation finished in
``--work-dir`` (a run is resumed from its checkpoint, a cached baseline is reloaded when its
spec matches), so an interrupted reproduction costs only the unfinished part; a run dir
holding a different config is an error, never silently reused.

The default ``small`` budgets fit a shared 2-core machine for meta-training; ``paper`` uses the
paper's batch sizes and iteration counts; ``long`` (MuJoCo families) is about an hour of a
2-core machine with its baselines; ``quick`` (Navigation2D, HalfCheetahDir) shows the whole
pipeline in minutes; ``tiny`` is for the test suite only. The ``pretrained`` baseline gets as
many env steps as MAML-TRPO consumed and the ``oracle`` as many at most (it stops when its
learning curve is flat), unless the budget caps them (``Budget.ppo_timesteps``; the report then
says the baselines saw fewer env steps): SB3 PPO updates on minibatches of 64 and steps one env
at a time, far slower per env step than MAML-TRPO's batched sampler. ``--jobs`` trains
the two side by side.
Only the public API is used: ``meta_rl.trainer.train`` and ``meta_rl.evaluation``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from meta_rl.config import BASELINES
from meta_rl.stats import confidence_interval
from meta_rl.tables import format_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
STEPS = 3


@dataclass(frozen=True)
class Budget:
    """How much compute one benchmark gets: meta-training, baselines, evaluation."""

    overrides: tuple[str, ...] = ()  # --set overrides on the benchmark's MAML config
    reptile_overrides: tuple[str, ...] = ()  # ... on its Reptile config (own batch sizes)
    # SB3 PPO env steps of "pretrained" and the cap of "oracle" (which stops once its curve is
    # flat); None: as many as the meta-learner it is compared with consumed (the default)
    ppo_timesteps: int | None = None
    eval_tasks: int = 40
    eval_episodes: int = 20
    ci_configs: bool = False  # start from the *_ci.yaml configs (tiny budget)
    ppo_overrides: dict[str, Any] = field(default_factory=dict)  # PPOBaselineSpec fields
    # score every method with clipped actions (None: the meta-learner's train.clip_actions)
    eval_clip_actions: bool | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    config: str  # experiments/configs/maml_<config>.yaml (reptile_<config>.yaml if present)
    budgets: dict[str, Budget]
    # The paper's value (Finn et al. 2017, figs. 4-5), read off its plots: approximate.
    paper: dict[str, dict[int, str]] = field(default_factory=dict)
    # the baselines that apply
    baselines: tuple[str, ...] = BASELINES
    # a published figure the table cannot show in its own cells (e.g. a success rate), quoted
    published: str = ""


_TINY_OVERRIDES = (
    "train.iterations=1",
    "train.meta_batch_size=2",
    "train.episodes_per_task=2",
    "env.max_episode_steps=10",
    "policy.hidden_sizes=[8]",
    "train.checkpoint_every=0",
)
_TINY = Budget(
    overrides=_TINY_OVERRIDES,
    reptile_overrides=_TINY_OVERRIDES,
    eval_tasks=3,
    eval_episodes=2,
    ci_configs=True,
    ppo_overrides={
        "n_envs": 2,
        "ppo_kwargs": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
    },
)

# MuJoCo families: paper 40 tasks x 20 episodes x 500 iterations; "small" is 20 x 10 x 40
_MUJOCO_SMALL_OVERRIDES = (
    "train.iterations=40",
    "train.meta_batch_size=20",
    "train.episodes_per_task=10",
)
# "long": 10 tasks x 10 episodes x 400 iterations (16 M env steps on HalfCheetah), the batched
# MuJoCo backend in 2 worker processes (same episodes as vector); SB3 PPO at the RL Zoo's own
# budget for HalfCheetah (1 M env steps), since matching 16 M would take hours here. Reptile
# samples 4 batches per iteration (3 inner steps and the post-adaptation one) against
# MAML-TRPO's 2, so half the iterations give it the same env steps.
_MUJOCO_LONG_SAMPLING = ("train.checkpoint_every=25", "train.sampler=mujoco", "train.num_workers=2")
_MUJOCO_LONG = Budget(
    (
        "train.iterations=400",
        "train.meta_batch_size=10",
        "train.episodes_per_task=10",
        *_MUJOCO_LONG_SAMPLING,
    ),
    reptile_overrides=("train.iterations=200", *_MUJOCO_LONG_SAMPLING),
    ppo_timesteps=1_000_000,
    eval_tasks=20,
    eval_episodes=10,
)


def _with_iterations(budget: Budget, iterations: int) -> Budget:
    """``budget`` with MAML-TRPO's ``train.iterations`` replaced, and Reptile's in proportion."""
    prefix = "train.iterations="

    def count(overrides: tuple[str, ...]) -> int:
        return next(int(o.removeprefix(prefix)) for o in overrides if o.startswith(prefix))

    def replaced(overrides: tuple[str, ...], new_count: int) -> tuple[str, ...]:
        return tuple(f"{prefix}{new_count}" if o.startswith(prefix) else o for o in overrides)

    reptile = budget.reptile_overrides
    if any(o.startswith(prefix) for o in reptile):
        reptile = replaced(reptile, count(reptile) * iterations // count(budget.overrides))
    return dataclasses.replace(
        budget, overrides=replaced(budget.overrides, iterations), reptile_overrides=reptile
    )


def _on_raw_samples(budget: Budget) -> Budget:
    """``budget`` trained on raw samples (clip_actions_halfcheetah_dir_long.md: HalfCheetahDir
    learns far better so), every method scored with clipped actions as in ``budget``."""
    raw = "train.clip_actions=false"
    return dataclasses.replace(
        budget,
        overrides=(*budget.overrides, raw),
        reptile_overrides=(*budget.reptile_overrides, raw),
        eval_clip_actions=True,
    )


# The Ant steps several times slower than HalfCheetah: half the iterations fit the same hour.
_ANT_LONG = _with_iterations(_MUJOCO_LONG, 200)
_MUJOCO_LONG_RAW = _on_raw_samples(_MUJOCO_LONG)
_ANT_LONG_RAW = _on_raw_samples(_ANT_LONG)
# twice long_raw's iterations: a work dir holding the long_raw run extends it (resume is
# bitwise) and reuses its baselines (the same specs)
_MUJOCO_LONGER_RAW = _with_iterations(_MUJOCO_LONG_RAW, 800)
_ANT_LONGER_RAW = _with_iterations(_ANT_LONG_RAW, 400)
# three times long_raw's (48 M env steps on HalfCheetah), extending a longer_raw work dir
_MUJOCO_LONGEST_RAW = _with_iterations(_MUJOCO_LONG_RAW, 1200)

_MUJOCO_BUDGETS = {
    "small": Budget(_MUJOCO_SMALL_OVERRIDES, eval_tasks=20, eval_episodes=10),
    "long": _MUJOCO_LONG,
    "paper": Budget(("train.iterations=500",)),
    "tiny": _TINY,
}

# Meta-World ML1: garage's 2000 iterations of 25 tasks x 10 episodes x 500 steps for "paper";
# "small" is 10 x 10 x 20 iterations (2 M env steps), its baselines matched to it; "paper"
# caps the baselines' PPO at 1 M env steps (equal steps of SB3 PPO would not fit this machine).
_METAWORLD_BUDGETS = {
    "small": Budget(
        ("train.iterations=20", "train.meta_batch_size=10", "train.checkpoint_every=5"),
        eval_tasks=10,
        eval_episodes=10,
    ),
    "paper": Budget(ppo_timesteps=1_000_000),
    "tiny": dataclasses.replace(_TINY, ci_configs=False),
}
# ML10: 10 tasks (one meta-batch) x 10 episodes x 10 iterations (1 M env steps) for MAML-TRPO and
# Reptile; garage's 20 x 10 x 2000 iterations for "paper". No oracle: ML10's test classes are
# new skills, not a hidden goal that an observation could reveal.
_ML10_SMALL_OVERRIDES = (
    "train.iterations=10",
    "train.meta_batch_size=10",
    "train.checkpoint_every=5",
)
# "long": 2 M env steps for each method (MAML-TRPO 20 iterations; Reptile, whose iteration
# samples twice as many episodes, 10 as in "small"), the pretrained baseline matched to them.
# A work dir holding the small runs extends MAML-TRPO's (resume is bitwise) and reuses Reptile's.
_ML10_LONG_OVERRIDES = ("train.meta_batch_size=10", "train.checkpoint_every=5")
_ML10_BUDGETS = {
    **_METAWORLD_BUDGETS,
    "small": Budget(
        _ML10_SMALL_OVERRIDES,
        reptile_overrides=_ML10_SMALL_OVERRIDES,
        eval_tasks=10,
        eval_episodes=10,
    ),
    "long": Budget(
        ("train.iterations=20", *_ML10_LONG_OVERRIDES),
        reptile_overrides=("train.iterations=10", *_ML10_LONG_OVERRIDES),
        eval_tasks=10,
        eval_episodes=10,
    ),
}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "navigation2d",
            "navigation2d",
            {
                # the paper's batch (20 tasks x 20 episodes), 50 meta-iterations
                "small": Budget(("train.iterations=50",)),
                # the `make run` batch (10 tasks x 10 episodes), 20 meta-iterations: ~0.4 M steps
                "quick": Budget(
                    (
                        "train.iterations=20",
                        "train.meta_batch_size=10",
                        "train.episodes_per_task=10",
                    ),
                    eval_tasks=20,
                    eval_episodes=10,
                ),
                "paper": Budget(("train.iterations=500",)),
                "tiny": _TINY,
            },
            paper={
                "maml_trpo": {1: "≈ -10 to -20"},
                "pretrained": {1: "≈ -40"},
            },
        ),
        Benchmark(
            "halfcheetah_dir",
            "halfcheetah_dir",
            {
                **_MUJOCO_BUDGETS,
                "small": dataclasses.replace(
                    _MUJOCO_BUDGETS["small"], reptile_overrides=("train.iterations=40",)
                ),
                # 10 tasks x 10 episodes x 6 iterations (0.24 M env steps): shows the pipeline
                # with baselines matched to it in ~15 min here (their PPO is the slow part)
                "quick": Budget(
                    (
                        "train.iterations=6",
                        "train.meta_batch_size=10",
                        "train.episodes_per_task=10",
                        "train.sampler=mujoco",
                    ),
                    reptile_overrides=("train.iterations=6",),
                    eval_tasks=20,
                    eval_episodes=10,
                ),
                "long": _MUJOCO_LONG,
                "long_raw": _MUJOCO_LONG_RAW,
            },
            paper={"maml_trpo": {1: "≈ +300"}, "pretrained": {1: "≈ 0 to 50"}},
        ),
        Benchmark(
            "halfcheetah_vel",
            "halfcheetah_vel",
            {
                **_MUJOCO_BUDGETS,
                "long_raw": _MUJOCO_LONG_RAW,
                "longer_raw": _MUJOCO_LONGER_RAW,
                "longest_raw": _MUJOCO_LONGEST_RAW,
            },
            paper={"maml_trpo": {1: "≈ -60 to -70"}},
        ),
        Benchmark(
            "ant_dir",
            "ant_dir",
            {
                **_MUJOCO_BUDGETS,
                "long": _ANT_LONG,
                "long_raw": _ANT_LONG_RAW,
                "longer_raw": _ANT_LONGER_RAW,
            },
        ),
        Benchmark(
            "ant_vel",
            "ant_vel",
            {
                **_MUJOCO_BUDGETS,
                "long": _ANT_LONG,
                "long_raw": _ANT_LONG_RAW,
                "longer_raw": _ANT_LONGER_RAW,
            },
        ),
        *(
            Benchmark(
                f"metaworld_ml1_{env}",
                f"metaworld_ml1_{env}-v3",
                dict(_METAWORLD_BUDGETS),
            )
            for env in ("reach", "push", "pick-place")
        ),
        Benchmark(
            "metaworld_ml10",
            "metaworld_ml10",
            _ML10_BUDGETS,
            baselines=("random", "pretrained"),
            published="MAML-TRPO meta-test success 31.6-36 % (Meta-World paper, Yu et al. "
            "2019: updated manuscript and CoRL version)",
        ),
    )
}


# named in --help with who has them
EXTRA_BUDGETS = ("quick", "long", "long_raw", "longer_raw", "longest_raw")


def _who_has(budget: str) -> str:
    """'long: ant_dir, ...': the benchmarks that define ``budget``, for ``--help``."""
    names = [name for name, b in sorted(BENCHMARKS.items()) if budget in b.budgets]
    return f"{budget}: {', '.join(names)}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--budget",
        default="small",
        choices=sorted({name for b in BENCHMARKS.values() for name in b.budgets}),
        help="default: small; " + "; ".join(map(_who_has, EXTRA_BUDGETS)),
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument(
        "--seed",
        dest="seeds",
        type=int,
        nargs="+",
        default=[1],
        help="training seed of every method; several: one table each, and their spread",
    )
    parser.add_argument(
        "--eval-seed", type=int, default=1, help="held-out task stream (never training's)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no oversubscription)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="SB3 baselines trained side by side, one process and one torch thread each",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("reptile", *BASELINES),
        help="leave a method out (repeatable)",
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# stages


def _config_path(kind: str, benchmark: Benchmark, budget: Budget) -> Path:
    return CONFIGS / f"{kind}_{benchmark.config}{'_ci' if budget.ci_configs else ''}.yaml"


def train_or_reuse(config: Any, run_dir: Path) -> dict[str, Any]:
    """Meta-train into ``run_dir``, resume an unfinished run, or reuse a finished one."""
    from meta_rl.checkpoint import find_latest, load_checkpoint
    from meta_rl.config import config_to_dict, load_config
    from meta_rl.runs import RunDirError
    from meta_rl.trainer import train

    latest = find_latest(run_dir)
    status = "trained"
    if latest is not None:
        saved = config_to_dict(load_config(run_dir / "config.yaml"))
        wanted = config_to_dict(config)
        # may differ: the budget can be extended, and the sampler backend and thread count
        # change speed, not episodes (the backends' equivalence is tested)
        for key in ("iterations", "sampler", "num_workers", "num_threads"):
            saved["train"][key] = wanted["train"][key]
        if saved != wanted:
            raise SystemExit(f"{run_dir} holds a run with another config: use another --work-dir")
        done = load_checkpoint(latest)["iteration"] + 1
        if done >= config.train.iterations:
            status = "reused (trained by an earlier invocation)"
        else:
            status = f"resumed at iteration {done}"
            try:
                train(config, resume=run_dir)
            except RunDirError as err:  # e.g. a schedule that follows the run's length
                raise SystemExit(f"{err}; or use another --work-dir") from None
    else:
        train(config, run_dir=run_dir)
    with (run_dir / "progress.csv").open(encoding="utf-8") as f:
        last = list(csv.DictReader(f))[-1]
    return {
        "status": status,
        "train_env_steps": int(last["env_steps"]),
        "train_wall_s": float(last["time_s"]),
        "iterations": int(last["iteration"]) + 1,
    }


def run_benchmark(args: argparse.Namespace) -> Path:
    from meta_rl.config import ALGORITHMS, load_config
    from meta_rl.evaluation import EvalSettings, evaluate_run
    from meta_rl.perf import configure_learner

    configure_learner(args.threads)  # what `meta-rl train` does: threads and tuned malloc
    benchmark = BENCHMARKS[args.benchmark]
    if args.budget not in benchmark.budgets:
        known = ", ".join(sorted(benchmark.budgets))
        raise SystemExit(f"--budget {args.budget}: {benchmark.name} has budgets {known}")
    budget = benchmark.budgets[args.budget]
    work = args.work_dir / result_stem(benchmark, args.budget, args.seed)
    common = [f"train.seed={args.seed}", f"train.num_threads={args.threads}"]
    methods = [("maml_trpo", _config_path("maml", benchmark, budget), budget.overrides)]
    reptile = _config_path("reptile", benchmark, budget)
    if "reptile" in ALGORITHMS and reptile.is_file() and "reptile" not in args.skip:
        methods.append(("reptile", reptile, budget.reptile_overrides))
    baselines = tuple(b for b in benchmark.baselines if b not in args.skip)

    started = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    curves, trained = [], {}
    for i, (name, path, overrides) in enumerate(methods):
        config = load_config(path, [*overrides, *common])
        run_dir = work / name
        print(f"[{benchmark.name}] {name}: meta-training -> {run_dir}", file=sys.stderr)
        trained[name] = {
            "config": path.relative_to(ROOT),
            "overrides": overrides,
            "run_dir": run_dir,
            **train_or_reuse(config, run_dir),
        }
        settings = EvalSettings(
            tasks=budget.eval_tasks,
            steps=STEPS,
            episodes=budget.eval_episodes,
            seed=args.eval_seed,
            baselines=baselines if i == 0 else (),
            baseline_timesteps=budget.ppo_timesteps,
            baseline_jobs=args.jobs,
            clip_actions=budget.eval_clip_actions,
        )
        print(f"[{benchmark.name}] {name}: evaluating", file=sys.stderr)
        curves += evaluate_run(
            run_dir,
            settings,
            method=name,
            baseline_cache=work / "baselines",
            baseline_overrides=budget.ppo_overrides,
            progress=lambda m: print(f"[{benchmark.name}]   {m}", file=sys.stderr),
        )
    for curve in curves:
        trained_as = curve.method.split(" (")[0]  # "reptile (own inner loop)" -> "reptile"
        if trained_as in trained:
            curve.info = {
                k: v
                for k, v in trained[trained_as].items()
                if k not in ("config", "overrides", "run_dir")
            }
    return write_report(args, benchmark, budget, curves, trained, started, load_start)


# ---------------------------------------------------------------------------------------------
# report


def machine_description(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({threads} thread{'s' if threads > 1 else ''}), Python {platform.python_version()}"
    )


def _fmt_steps(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def paired_lines(curves: Sequence[Any]) -> list[str]:
    """MAML-TRPO after one step against the pretrained baseline's best step, paired task by
    task: every method is scored on the same held-out tasks with the same resets and action
    noise, so the per-task differences drop the spread between tasks that the two intervals
    of the table carry. On a family that reports success, the success rate (the verdict's
    metric, ``experiments/summary.py``); else the return."""
    by_method = {c.method: c for c in curves}
    maml, pretrained = by_method.get("maml_trpo"), by_method.get("pretrained")
    if maml is None or pretrained is None:
        return []
    by_success = maml.task_success is not None and pretrained.task_success is not None
    ours, theirs = (
        (maml.task_success, pretrained.task_success)
        if by_success
        else (maml.task_returns, pretrained.task_returns)
    )
    best = max(range(len(theirs)), key=lambda k: sum(theirs[k]) / len(theirs[k]))
    diffs = [a - b for a, b in zip(ours[1], theirs[best], strict=True)]
    mean, half = confidence_interval(diffs)
    form = "{:+.1%}" if by_success else "{:+.1f}"
    metric = "success rate" if by_success else "return"
    higher = sum(d > 0 for d in diffs)
    return [
        f"Paired over the same held-out tasks ({metric}): MAML-TRPO after one step minus the "
        f"pretrained baseline after {best} step{'' if best == 1 else 's'} (its best): "
        f"{form.format(mean)} ± {form.format(half).lstrip('+')} (95 % Student-t interval of the "
        f"{len(diffs)} per-task differences; MAML-TRPO higher on {higher} of {len(diffs)}).",
        "",
    ]


def oracle_warnings(curves: Sequence[Any]) -> list[str]:
    """Why this table's oracle is not an upper bound, if it is not: a meta-learner that beats
    it after adaptation, or the pretrained baseline (which does not see the task) at any step
    (the oracle is undertrained), or an oracle stopped by its cap."""
    oracle = next((c for c in curves if c.method == "oracle"), None)
    if oracle is None:
        return []
    best = max(mean for mean, _ in oracle.mean_ci())
    steps = int(oracle.info.get("train_env_steps", 0))
    warnings = []
    for curve in curves:
        if curve.method in ("random", "oracle"):
            continue
        first = 0 if curve.method == "pretrained" else 1
        means = enumerate(curve.mean_ci())
        beaten = [(k, m) for k, (m, _) in means if k >= first and m > best]
        if beaten:
            k, mean = beaten[0]
            warnings.append(
                f"{curve.method} after {k} step{'' if k == 1 else 's'} ({mean:.1f}) beats the "
                f"oracle (its best: {best:.1f}, trained for {_fmt_steps(steps)} env steps, "
                f"stopped by: {oracle.info.get('stopped', '?')}). An oracle that observes the "
                "task should lose neither to adaptation nor to a policy that does not see the "
                "task: it is undertrained, and this table has no upper bound."
            )
    if oracle.info.get("stopped") == "cap":
        warnings.append(
            f"the oracle reached its cap of {_fmt_steps(steps)} env steps before its learning "
            "curve flattened: it may be undertrained."
        )
    return warnings


def baseline_lines(curves: Sequence[Any], budget: Budget, meta_steps: int, jobs: int) -> list[str]:
    """One budget line per SB3 baseline: env steps, where its settings come from, why it stopped.

    ``budget.ppo_timesteps`` (when set) replaces the meta-learner's ``meta_steps`` as the
    pretrained budget and the oracle's cap; the line says so when that is fewer env steps."""
    lines = []
    steps = budget.ppo_timesteps or meta_steps
    if steps >= meta_steps:
        matched = "the same env steps as the meta-learner (default)"
    else:
        matched = (
            f"the budget's {_fmt_steps(steps)} env steps, FEWER than the meta-learner's "
            f"{_fmt_steps(meta_steps)} (equal steps of SB3 PPO would not fit this machine)"
        )
    from meta_rl.agents.pretrained import FlatStop  # SB3 is loaded once baselines exist

    for curve in curves:
        if curve.method not in ("pretrained", "oracle"):
            continue
        info = curve.info
        what = {
            "pretrained": f"a new random task every episode, {matched}, then the same inner steps",
            "oracle": "observes the task; trained until its learning curve is flat "
            f"(`meta_rl.agents.pretrained.FlatStop`: {FlatStop().criterion()}), "
            f"capped at {_fmt_steps(steps)} env steps",
        }[curve.method]
        stopped = {"flat": "flattened", "cap": "cap reached, NOT flat", "budget": "budget"}
        lines.append(
            f"- {curve.method}: SB3 PPO, {what}; settings: {info.get('settings_source', '?')}; "
            f"{_fmt_steps(int(info.get('train_env_steps', 0)))} env steps, "
            f"{float(info.get('train_wall_s', 0.0)):.0f} s, stopped: "
            f"{stopped.get(info.get('stopped', ''), '?')}."
        )
    if len(lines) > 1 and jobs > 1:
        lines.append(
            f"- The SB3 baselines trained {jobs} at a time (`--jobs {jobs}`), one process and "
            "one torch thread each: their wall-clocks overlap."
        )
    return lines


def paper_budget_line(benchmark: Benchmark, trained: dict[str, dict[str, Any]]) -> str:
    """The paper-budget config's env steps (its batch x horizon x phases x iterations) next to
    what MAML-TRPO consumed here."""
    import gymnasium as gym

    from meta_rl.config import load_config

    budget = benchmark.budgets["paper"]
    paper = load_config(_config_path("maml", benchmark, budget), budget.overrides)
    horizon = paper.env.max_episode_steps or gym.spec(paper.env.id).max_episode_steps
    tr = paper.train
    phases = paper.algo.num_inner_steps + 1
    steps = tr.meta_batch_size * tr.episodes_per_task * horizon * phases * tr.iterations
    here = trained.get("maml_trpo", {}).get("train_env_steps", 0)
    return (
        f"- Paper budget (`--budget paper`: {tr.meta_batch_size} tasks x "
        f"{tr.episodes_per_task} episodes x {horizon} steps x {phases} phases x "
        f"{tr.iterations} meta-iterations): at most {_fmt_steps(steps)} env steps "
        f"(episodes that end early take fewer); MAML-TRPO here: {_fmt_steps(here)}"
        + (f", {here / steps:.1%} of it." if steps else ".")
    )


def _progress(info: dict[str, Any]) -> list[dict[str, str]]:
    """A meta-learner's ``progress.csv``, one dict per meta-iteration."""
    with (Path(info["run_dir"]) / "progress.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def meta_learner_series(
    trained: dict[str, dict[str, Any]], metric: str
) -> list[tuple[str, list[float], list[float]]]:
    """(label, env steps, ``<metric>_pre_adapt`` / ``_post_adapt``) per meta-learner phase, for
    the meta-learners whose ``progress.csv`` records ``metric``."""
    series = []
    for name, info in trained.items():
        rows = _progress(info)
        if not rows or f"{metric}_pre_adapt" not in rows[0]:
            continue
        steps = [float(r["env_steps"]) for r in rows]
        for phase, label in (("pre", "before"), ("post", "after")):
            values = [float(r[f"{metric}_{phase}_adapt"]) for r in rows]
            series.append((f"{name}, {label} adaptation", steps, values))
    return series


def training_success_lines(trained: dict[str, dict[str, Any]], last: int = 5) -> list[str]:
    """Report lines of each meta-learner's success on its own training tasks at the end of
    meta-training (mean of the ``last`` meta-iterations of ``progress.csv``)."""
    lines = []
    for label, _, values in meta_learner_series(trained, "success"):
        tail = values[-last:]
        lines.append(f"- {label}: {sum(tail) / len(tail):.1%}")
    if not lines:
        return []
    return [
        f"Meta-training success: the fraction of training episodes that reached success, on "
        f"the training tasks, mean of the last {last} meta-iterations (`progress.csv`):",
        "",
        *lines,
        "",
    ]


def learning_series(
    trained: dict[str, dict[str, Any]], curves: Sequence[Any]
) -> list[tuple[str, list[float], list[float]]]:
    """(label, env steps, training return) per meta-learner phase and per SB3 baseline."""
    series = meta_learner_series(trained, "return")
    for curve in curves:
        scores = (curve.info or {}).get("curve_scores")
        if curve.method in ("pretrained", "oracle") and scores:
            steps = [float(s) for s in curve.info["curve_env_steps"]]
            series.append((f"{curve.method} (SB3 PPO)", steps, [float(x) for x in scores]))
    return series


def write_report(
    args: argparse.Namespace,
    benchmark: Benchmark,
    budget: Budget,
    curves: list[Any],
    trained: dict[str, dict[str, Any]],
    started: float,
    load_start: float,
) -> Path:
    from meta_rl.plotting import plot_curves, plot_learning_curves

    out = args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(benchmark, args.budget, args.seed)
    png = plot_curves(
        [(c.method, c) for c in curves],
        out / f"{stem}.png",
        title=f"{benchmark.name} ({args.budget} budget): held-out tasks",
    )
    learning = plot_learning_curves(
        learning_series(trained, curves),
        out / f"{stem}_learning.png",
        title=f"{benchmark.name} ({args.budget} budget): training",
    )
    success_series = meta_learner_series(trained, "success")
    success_png = success_series and plot_learning_curves(
        success_series,
        out / f"{stem}_success.png",
        title=f"{benchmark.name} ({args.budget} budget): meta-training success",
        ylabel="success rate of training episodes",
    )
    header = ["method", *(f"after {k} step{'s' if k != 1 else ''}" for k in range(STEPS + 1))]
    header += ["training env steps", "training wall-clock", "eval env steps", "eval wall-clock"]
    rows = []
    with (out / f"{stem}.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "step", "mean_return", "ci95", "num_tasks"])
        for curve in curves:
            cells = [curve.method]
            for step, (mean, half) in enumerate(curve.mean_ci()):
                writer.writerow(
                    [
                        curve.method,
                        step,
                        f"{mean:.3f}",
                        f"{half:.3f}",
                        len(curve.task_returns[step]),
                    ]
                )
                paper = benchmark.paper.get(curve.method, {}).get(step)
                cells.append(f"{mean:.1f} ± {half:.1f}" + (f" (paper {paper})" if paper else ""))
            info = curve.info
            cells += [
                _fmt_steps(int(info.get("train_env_steps", 0))),
                _fmt_seconds(float(info.get("train_wall_s", 0.0))),
                _fmt_steps(curve.env_steps),
                _fmt_seconds(curve.wall_s),
            ]
            rows.append(cells)
    table = format_table(header, rows, markdown=True)
    success = _success_table(curves)
    command = f"python experiments/reproduce.py --benchmark {benchmark.name}"
    if args.budget != "small":
        command += f" --budget {args.budget}"
    if args.seed != 1:
        command += f" --seed {args.seed}"
    lines = [
        f"# {benchmark.name}: adaptation on held-out tasks ({args.budget} budget)",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        "every number below was measured by that command (none edited by hand).",
        "",
        "Mean return over held-out tasks after 0-3 inner policy-gradient steps "
        f"(step size alpha, then alpha/2), ± the 95 % Student-t interval over "
        f"{budget.eval_tasks} tasks, {budget.eval_episodes} episodes per task and step."
        + (
            " Paper values (Finn et al. 2017, figs. 4-5) are read off its plots: approximate."
            if benchmark.paper
            else ""
        ),
        "",
        table,
        "",
        *success,
        *paired_lines(curves),
        *(f"**Warning: {w}**\n" for w in oracle_warnings(curves)),
        f"![adaptation curves]({png.name})",
        "",
        "Learning curves: the meta-learner's training return before and after adaptation per "
        "meta-iteration (`progress.csv`), and the SB3 baselines' mean return of the training "
        "episodes per chunk of env steps (with exploration noise; the oracle observes the task).",
        "",
        f"![learning curves]({learning.name})",
        "",
        *training_success_lines(trained),
        *([f"![meta-training success]({success_png.name})", ""] if success_png else []),
        *(
            [f"Published (not measured here): {benchmark.published}, at its budget.", ""]
            if benchmark.published
            else []
        ),
        "## Budget",
        "",
        f"- Budget `{args.budget}`"
        + (
            " (fits a shared 2-core machine; `--budget paper` for the paper's)"
            if args.budget == "small"
            else ""
        )
        + f"; every run with `--set train.seed={args.seed} "
        f"--set train.num_threads={args.threads}`.",
    ]
    if budget.eval_clip_actions is not None:
        how = "clipped to the Box" if budget.eval_clip_actions else "raw (unclipped)"
        lines.append(
            f"- Every method is scored with its actions {how}, whatever the meta-learner "
            "trained with (`meta-rl evaluate --clip-actions`)."
        )
    for name, info in trained.items():
        sets = " ".join(f"--set {o}" for o in info["overrides"])
        lines.append(
            f"- {name}: `{info['config']}`"
            + (f" with `{sets}`" if sets else " as is")
            + f": {info['iterations']} meta-iteration(s), "
            f"{_fmt_steps(info['train_env_steps'])} env steps, {info['train_wall_s']:.0f} s; "
            f"{info['status']}."
        )
    meta_steps = trained.get("maml_trpo", {}).get("train_env_steps", 0)
    lines += baseline_lines(curves, budget, meta_steps, args.jobs)
    lines.append("- random: the meta-learner's own initialisation, meta-training skipped.")
    lines.append(paper_budget_line(benchmark, trained))
    lines += [
        f"- Held-out tasks: seed {args.eval_seed}, spawn key `EVAL_SPAWN_KEY` of "
        "`meta_rl.evaluation` (disjoint from the training stream); same tasks, resets and "
        "action noise for every method.",
        "",
        "## Machine",
        "",
        f"- {machine_description(args.threads)}; load average {load_start:.1f} at the start "
        "(shared with other jobs: wall-clock is an upper bound).",
        f"- Total wall-clock of this invocation: {time.perf_counter() - started:.0f} s "
        "(reused stages cost nothing here; their own cost is in the table).",
        "",
    ]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print(path)
    return path


def _success_table(curves: list[Any]) -> list[str]:
    """Report lines of the success rates, for a family whose info has ``success``."""
    with_success = [c for c in curves if c.task_success is not None]
    if not with_success:
        return []
    header = ["method", *(f"after {k} step{'s' if k != 1 else ''}" for k in range(STEPS + 1))]
    rows = [[c.method, *(f"{m:.1%} ± {h:.1%}" for m, h in c.success_ci())] for c in with_success]
    return [
        "Success rate on the same held-out tasks (Meta-World's meta-test metric): the fraction "
        "of a task's episodes that reached success at any step, mean over tasks ± the 95 % "
        "Student-t interval; adaptation on the episodes sampled before each step.",
        "",
        format_table(header, rows, markdown=True),
        "",
    ]


def result_stem(benchmark: Benchmark, budget: str, seed: int) -> str:
    """``<benchmark>[_<budget>][_seed<N>]``: names its work dir and its result files."""
    stem = benchmark.name if budget == "small" else f"{benchmark.name}_{budget}"
    return stem if seed == 1 else f"{stem}_seed{seed}"


def write_seed_summary(args: argparse.Namespace, stems: Sequence[str]) -> Path:
    """``<benchmark>[_<budget>]_seeds.md``: per method and step, the mean over seeds of the
    held-out mean return and its spread (sample standard deviation over seeds), read back
    from each seed's CSV."""
    import statistics

    by_key: dict[tuple[str, int], list[float]] = {}
    for stem in stems:
        with (args.results_dir / f"{stem}.csv").open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                key = (row["method"], int(row["step"]))
                by_key.setdefault(key, []).append(float(row["mean_return"]))
    methods = list(dict.fromkeys(method for method, _ in by_key))
    header = ["method", *(f"after {k} step{'s' if k != 1 else ''}" for k in range(STEPS + 1))]
    rows = []
    for method in methods:
        cells = [method]
        for step in range(STEPS + 1):
            values = by_key.get((method, step), [])
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.fmean(values):.1f} ± {spread:.1f} (n={len(values)})")
        rows.append(cells)
    base = result_stem(BENCHMARKS[args.benchmark], args.budget, 1)
    seeds = " ".join(str(s) for s in args.seeds)
    lines = [
        f"# {args.benchmark} ({args.budget} budget): {len(stems)} seeds",
        "",
        f"Generated by `python experiments/reproduce.py --benchmark {args.benchmark} --budget "
        f"{args.budget} --seed {seeds}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        "from the per-seed tables it wrote (none edited by hand).",
        "",
        "Mean over training seeds of each seed's mean held-out return, ± the sample standard "
        "deviation over seeds (the spread between runs, not a confidence interval). Each "
        "seed's budget, baselines and intervals: "
        + ", ".join(f"[{stem}.md]({stem}.md)" for stem in stems)
        + ".",
        "",
        format_table(header, rows, markdown=True),
        "",
    ]
    path = args.results_dir / f"{base}_seeds.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    stems = []
    for seed in args.seeds:
        run_benchmark(argparse.Namespace(**{**vars(args), "seed": seed}))
        stems.append(result_stem(BENCHMARKS[args.benchmark], args.budget, seed))
    if len(stems) > 1:
        write_seed_summary(args, stems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
