"""``python -m benchmarks {ceiling,sampler,iteration,learning}``: tables on stdout, JSON on disk.

Every table compares against a baseline measured in the same run (a ratio), because absolute
seconds on a shared 2-core box move with the neighbours' load; the load average is recorded
with every result. Iteration variants run in fresh subprocesses so allocator settings and peak
memory do not leak from one to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meta_rl.tables import format_table

FAMILIES = {
    "nav": "MetaRL/Navigation2D-v0",
    "cheetah": "MetaRL/HalfCheetahVel-v0",
    "bandit": "MetaRL/Bandit-K5-v0",
    "mdp": "MetaRL/TabularMDP-v0",
    "ant": "MetaRL/AntVel-v0",
}
NETS = {"port": ([64, 64], "tanh"), "paper": ([100, 100], "relu")}
# name -> (config overrides, tune malloc); each is measured against the first one listed
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "naive": (["algo.task_chunk=0", "train.sampler=vector", "algo.analytic=false"], False),
    # the default algo.task_chunk
    "chunked": (["train.sampler=vector", "algo.analytic=false"], False),
    "chunked+malloc": (["train.sampler=vector", "algo.analytic=false"], True),
    "fast-autograd": (["algo.analytic=false"], True),  # + the fastest sampler for the family
    "fast": ([], True),  # + closed-form derivatives for a Gaussian MLP policy
    "fast+fisher20%": (["algo.fisher_subsample=0.2"], True),
}


CHILD = "_child"  # the internal subcommand a variant runs in (a fresh process), not listed


def variant_overrides(variant: str, family: str, extra: Sequence[str]) -> list[str]:
    """A variant's config overrides; "fast*" adds the fastest sampler for the family."""
    overrides = [*VARIANTS[variant][0], *extra]
    if variant.startswith("fast") and not any(o.startswith("train.sampler") for o in overrides):
        sampler = "torch" if family in ("nav", "bandit", "mdp") else "process"
        overrides.append(f"train.sampler={sampler}")
    return overrides


def load() -> float:
    return os.getloadavg()[0]


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Right-aligned columns, floats to 3 decimals (``meta_rl.tables``, the shared formatter)."""
    return format_table(columns, [[r.get(c, "") for c in columns] for r in rows], align="r")


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"-> {path}")


# --- env-step ceiling ---------------------------------------------------------------------------


def _raw_steps(env_id: str, num_envs: int, steps: int, seed: int) -> tuple[int, float]:
    """Step ``num_envs`` envs with precomputed random actions; (steps done, seconds)."""
    import gymnasium as gym
    import numpy as np

    import meta_rl.envs  # noqa: F401

    sub = [gym.make(env_id) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    for i, env in enumerate(sub):
        env.action_space.seed(seed + i)
        env.reset(seed=seed + i)
    actions = [[env.action_space.sample() for env in sub] for _ in range(64)]
    done, t = 0, time.perf_counter()
    while done < steps:
        for env, action in zip(sub, actions[int(rng.integers(64))], strict=True):
            _, _, term, trunc, _ = env.step(action)
            if term or trunc:
                env.reset()
            done += 1
    return done, time.perf_counter() - t


def _raw_worker(args: tuple[str, int, int, int]) -> tuple[int, float]:
    return _raw_steps(*args)


def ceiling(env_id: str, num_envs: int, steps: int, processes: int) -> float:
    """Raw env-step throughput (steps/s) of ``processes`` forked processes together.

    Each process times its own stepping loop (env construction and the pool excluded); the
    total is all steps over the slowest process's time.
    """
    if processes == 1:
        done, seconds = _raw_steps(env_id, num_envs, steps, 0)
        return done / seconds
    import multiprocessing as mp

    with mp.get_context("fork").Pool(processes) as pool:
        results = pool.map(_raw_worker, [(env_id, num_envs, steps, i) for i in range(processes)])
    return sum(r[0] for r in results) / max(r[1] for r in results)


def cmd_ceiling(args: argparse.Namespace) -> None:
    from meta_rl.perf import cpu_count

    cores = cpu_count()
    rows = []
    for family in args.families:
        steps = args.steps if family != "cheetah" and family != "ant" else args.steps // 5
        one = ceiling(FAMILIES[family], args.envs, steps, 1)
        many = ceiling(FAMILIES[family], args.envs, steps, cores)
        rows.append(
            {
                "family": family,
                "1 proc steps/s": one,
                f"{cores} procs steps/s": many,
                "ratio": many / one,
                "load": load(),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])))
    write(args.out, "ceiling", {"rows": rows, "cores": cores})


# --- sampler throughput -------------------------------------------------------------------------


def cmd_sampler(args: argparse.Namespace) -> None:
    import torch

    from meta_rl.agents.policies import make_policy
    from meta_rl.builders import build_sampler
    from meta_rl.functional import expand_to_tasks, policy_params
    from meta_rl.perf import configure_learner, cpu_count

    configure_learner()
    family, (hidden, act) = FAMILIES[args.family], NETS[args.net]
    cores = cpu_count()
    batch = args.tasks * args.episodes
    # Ceilings with as many live envs per process as the samplers hold: hundreds of envs'
    # physics state no longer fits in the CPU caches, which slows env.step itself and is not
    # sampler overhead. The 20-env ceilings show that cost.
    same = {1: ceiling(family, batch, 40 * batch, 1)}
    same[cores] = ceiling(family, batch // cores, 40 * batch // cores, cores)
    few = {n: ceiling(family, 20, 20_000 if args.family != "cheetah" else 8_000, n) for n in same}
    rows = []
    for backend in args.backends:
        config = _batch_config(args, [f"train.sampler={backend}"])
        try:
            sampler = build_sampler(config, torch.device("cpu"))
        except ValueError as exc:
            print(f"{backend}: skipped ({exc})")
            continue
        policy = make_policy(sampler.observation_space, sampler.action_space, hidden, act)
        params = expand_to_tasks(
            {k: v.detach() for k, v in policy_params(policy).items()}, args.tasks
        )
        tasks = sampler.sample_tasks()
        sampler.sample(policy, params, tasks)  # warm-up (worker start, first policy send)
        times, steps = [], 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            episodes = sampler.sample(policy, params, tasks)
            times.append(time.perf_counter() - t)
            steps = episodes.num_steps
        sampler.close()
        best = min(times)
        procs = cores if backend == "process" else 1
        rows.append(
            {
                "backend": backend,
                "batch_s": best,
                "steps/s": steps / best,
                "ceiling": f"{procs} proc",
                "of_ceiling": steps / best / same[procs],
                "of_20_env_ceiling": steps / best / few[procs],
                "load": load(),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    for n in same:
        print(
            f"ceiling, {n} proc: {same[n]:.0f} steps/s with {batch // n} envs each, "
            f"{few[n]:.0f} with 20"
        )
    print(table(rows, list(rows[0])))
    write(
        args.out,
        f"sampler_{args.family}_{args.net}",
        {"rows": rows, "ceiling_same_envs": same, "ceiling_20_envs": few, "args": _jsonable(args)},
    )


# --- meta-iteration split -----------------------------------------------------------------------


def _config(
    family: str,
    net: str,
    tasks: int,
    episodes: int,
    horizon: int | None,
    overrides: list[str],
    algo: str = "maml_trpo",
):
    from meta_rl.config import config_from_dict

    hidden, act = NETS[net]
    data = {
        "env": {"id": FAMILIES[family], "max_episode_steps": horizon},
        "policy": {"hidden_sizes": hidden, "activation": act},
        "algo": {"name": algo},
        "train": {"meta_batch_size": tasks, "episodes_per_task": episodes, "seed": 1},
    }
    return config_from_dict(data, overrides)


def _batch_config(args: argparse.Namespace, overrides: list[str]):
    """``_config`` for the meta-batch named by ``add_batch_arguments``."""
    return _config(args.family, args.net, args.tasks, args.episodes, args.horizon, overrides)


def _timed(
    owner: Any, name: str, totals: dict[str, float], key: str, sync: Callable[[], None]
) -> None:
    """Wrap ``owner.name`` to add its wall time to ``totals[key]``.

    ``sync`` waits for queued GPU work, so time lands in the phase that issued it.
    """
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        sync()
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            sync()
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def run_iterations(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant in this process: warm-up, then ``iterations`` timed meta-iterations."""
    from meta_rl import perf

    if spec["malloc"]:
        perf.tune_malloc()
    import torch

    import meta_rl.algorithms.maml_trpo as maml
    from meta_rl.trainer import MetaTrainer

    torch.set_num_threads(spec["threads"] or perf.cpu_count())
    device = torch.device(spec["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    config = _config(
        spec["family"],
        spec["net"],
        spec["tasks"],
        spec["episodes"],
        spec["horizon"],
        spec["overrides"],
        spec["algo"],
    )
    trainer = MetaTrainer(config, device)
    sampler, learner = trainer.sampler, trainer.meta_learner
    totals: dict[str, float] = {}
    _timed(sampler, "sample", totals, "sampling", sync)
    if isinstance(learner, maml.MAMLTRPOLearner):  # collect's inner steps
        _timed(learner.trpo, "inner_step", totals, "adaptation", sync)
    _timed(maml, "conjugate_gradient", totals, "cg", sync)
    _timed(maml, "backtracking_line_search", totals, "line_search", sync)
    rows = []
    for i in range(spec["iterations"] + 1):
        totals.clear()
        t = time.perf_counter()
        report = learner.iteration(sampler.sample_tasks())
        total = time.perf_counter() - t
        split = {k: totals.get(k, 0.0) for k in ("sampling", "adaptation", "cg", "line_search")}
        split["meta_gradient"] = report.optimize_s - split["cg"] - split["line_search"]
        rows.append(
            {
                "total": total,
                "collect": report.sampling_s,
                "update": report.optimize_s,
                **split,
                "pre": report.returns[0],
                "post": report.returns[-1],
            }
        )
        del i
    sampler.close()
    timed = rows[1:]  # the first iteration pays worker start-up and first-touch allocation
    mean = {k: sum(r[k] for r in timed) / len(timed) for k in timed[0]}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**mean, "peak_rss_mib": peak_mib, "iterations": rows}


def cmd_iteration(args: argparse.Namespace) -> None:
    if "cuda" in args.devices:
        import torch

        if not torch.cuda.is_available():
            sys.exit("benchmarks iteration: --devices cuda, but torch sees no CUDA device")
    rows, details = [], {}
    for variant, device in ((v, d) for d in args.devices for v in args.variants):
        overrides = variant_overrides(variant, args.family, args.overrides)
        malloc = VARIANTS[variant][1]
        label = variant if args.devices == ["cpu"] else f"{variant}@{device}"
        spec = {
            "device": device,
            "family": args.family,
            "net": args.net,
            "tasks": args.tasks,
            "episodes": args.episodes,
            "horizon": args.horizon,
            "overrides": overrides,
            "malloc": malloc,
            "iterations": args.iterations,
            "threads": args.threads,
            "algo": args.algo,
        }
        before = load()
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks", CHILD, json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(f"{label}: failed\n{out.stderr[-2000:]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        details[label] = {"spec": spec, **result}
        base = rows[0]["total"] if rows else result["total"]
        rows.append(
            {
                "variant": label,
                "total": result["total"],
                "vs_first": result["total"] / base,
                "sampling": result["sampling"],
                "adaptation": result["adaptation"],
                "meta_grad": result["meta_gradient"],
                "cg": result["cg"],
                "line_search": result["line_search"],
                "peak_MiB": result["peak_rss_mib"],
                "post": result["post"],
                "load": 0.5 * (before + load()),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    title = f"{args.algo} {args.family} {args.net} {args.tasks}x{args.episodes}x{args.horizon}"
    print(f"\n{title} (seconds per meta-iteration, mean of {args.iterations} after 1 warm-up)")
    print(table(rows, list(rows[0])))
    write(
        args.out,
        f"iteration_{args.algo}_{args.family}_{args.net}",
        {"rows": rows, "details": details, "args": _jsonable(args)},
    )


# --- learning curves ---------------------------------------------------------------------------


def cmd_learning(args: argparse.Namespace) -> None:
    """Train each variant at each seed with the real trainer; compare returns by iteration.

    Speed changes must not change learning: this puts a variant's curve (mean over seeds of the
    post-adaptation return, and its spread) beside the first variant's, at a few iterations.
    """
    import csv

    from meta_rl.perf import configure_learner
    from meta_rl.trainer import train

    curves: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for variant in args.variants:
        overrides = variant_overrides(variant, args.family, args.overrides)
        for seed in args.seeds:
            config = _batch_config(
                args, [*overrides, f"train.seed={seed}", f"train.iterations={args.iterations}"]
            )
            configure_learner(config.train.num_threads)  # as `meta-rl train` does; train() doesn't
            run_dir = train(config, run_dir=args.out / f"learning_{variant}_{seed}")
            with (run_dir / "progress.csv").open(newline="") as f:
                rows = list(csv.DictReader(f))
            curves.setdefault(variant, {})[seed] = [
                (float(r["return_pre_adapt"]), float(r["return_post_adapt"])) for r in rows
            ]
    points = sorted({0, *range(9, args.iterations, 10), args.iterations - 1})
    table_rows = []
    for variant, by_seed in curves.items():
        for it in points:
            pre = [c[it][0] for c in by_seed.values()]
            post = [c[it][1] for c in by_seed.values()]
            table_rows.append(
                {
                    "variant": variant,
                    "iteration": it,
                    "pre_mean": sum(pre) / len(pre),
                    "post_mean": sum(post) / len(post),
                    "post_min": min(post),
                    "post_max": max(post),
                }
            )
    title = f"{args.family} {args.net} {args.tasks}x{args.episodes}, seeds {args.seeds}"
    print(f"\nlearning curves: {title} (return per iteration, mean over seeds)")
    print(table(table_rows, list(table_rows[0])))
    summary = late_summary(curves, window=min(10, args.iterations))
    print("\npost-adaptation return averaged over the last iterations, per seed")
    print(table(summary, list(summary[0])))
    write(
        args.out,
        f"learning_{args.family}_{args.net}",
        {"rows": table_rows, "late": summary, "curves": curves},
    )


def late_summary(
    curves: dict[str, dict[int, list[tuple[float, float]]]], window: int
) -> list[dict[str, Any]]:
    """Per variant: the last ``window`` iterations' mean post return, over seeds, vs the first.

    ``diff`` is the difference of the seed means from the first variant's, ``seed_std`` the
    first variant's standard deviation over seeds: a diff well inside it is noise.
    """
    late = {
        variant: [statistics.fmean(post for _, post in c[-window:]) for c in by_seed.values()]
        for variant, by_seed in curves.items()
    }
    first = next(iter(late.values()))
    spread = statistics.stdev(first) if len(first) > 1 else float("nan")
    return [
        {
            "variant": variant,
            "window": window,
            "per_seed": " ".join(f"{v:.1f}" for v in values),
            "mean": statistics.fmean(values),
            "diff": statistics.fmean(values) - statistics.fmean(first),
            "seed_std": spread,
        }
        for variant, values in late.items()
    ]


def _jsonable(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "fn"}


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The meta-batch every benchmark measures: family, network, tasks x episodes x horizon."""
    parser.add_argument("--family", default="nav", choices=FAMILIES)
    parser.add_argument("--net", default="port", choices=NETS)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=None)


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD]:  # internal: one iteration variant, JSON on stdout
        print(json.dumps(run_iterations(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(
        prog=prog, description="speed benchmarks: tables on stdout, JSON on disk"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="JSON directory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("ceiling", help="raw env.step throughput, 1 process and 1 per core")
    c.add_argument(
        "--families", nargs="+", default=["nav", "bandit", "mdp", "cheetah"], choices=FAMILIES
    )
    c.add_argument("--envs", type=int, default=20)
    c.add_argument("--steps", type=int, default=40_000)
    c.set_defaults(fn=cmd_ceiling)

    s = sub.add_parser("sampler", help="meta-batch sampling throughput per backend")
    add_batch_arguments(s)
    s.add_argument("--backends", nargs="+", default=["vector", "process", "torch"])
    s.add_argument("--repeats", type=int, default=3)
    s.set_defaults(fn=cmd_sampler)

    i = sub.add_parser("iteration", help="meta-iteration time split per variant")
    add_batch_arguments(i)
    i.add_argument("--algo", default="maml_trpo")
    i.add_argument("--iterations", type=int, default=3)
    i.add_argument("--threads", type=int, default=None, help="learner threads (default: cores)")
    i.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    i.add_argument(
        "--devices",
        nargs="+",
        default=["cpu"],
        choices=["cpu", "cuda"],
        help="learner (and torch-native env) devices; every variant runs on each",
    )
    add_override_argument(i)
    i.set_defaults(fn=cmd_iteration)

    lc = sub.add_parser("learning", help="learning curves per variant over seeds")
    add_batch_arguments(lc)
    lc.add_argument("--iterations", type=int, default=30)
    lc.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    lc.add_argument("--variants", nargs="+", default=["fast", "fast+fisher20%"], choices=VARIANTS)
    add_override_argument(lc)
    lc.set_defaults(fn=cmd_learning)

    args = parser.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
