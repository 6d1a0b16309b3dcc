"""``benchmarks iteration``: seconds per meta-iteration and where they go, per variant.

Each variant runs in a fresh subprocess (``_child``), so allocator settings and peak memory do
not leak from one to the next. The split into phases is what the learner itself reports
(``IterationReport.timings``, measured with ``meta_rl.timing.PhaseTimer``, which syncs the
GPU at phase boundaries): nothing here patches the library or infers a phase by subtraction.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import (
    VARIANTS,
    add_batch_arguments,
    add_override_argument,
    jsonable,
    load,
    make_config,
    table,
    variant_overrides,
    write,
)

# phases a learner reports; a learner without one (Reptile has no CG) reports 0 for it
PHASES = ("sampling", "advantages", "adaptation", "meta_gradient", "cg", "line_search")


def run_iterations(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant in this process: warm-up, then ``iterations`` timed meta-iterations."""
    from meta_rl import perf

    if spec["malloc"]:
        perf.tune_malloc()
    import torch

    from meta_rl.trainer import MetaTrainer

    torch.set_num_threads(spec["threads"] or perf.cpu_count())
    config = make_config(
        spec["family"],
        spec["net"],
        spec["tasks"],
        spec["episodes"],
        spec["horizon"],
        spec["overrides"],
        spec["algo"],
    )
    trainer = MetaTrainer(config, torch.device(spec["device"]))
    sampler, learner = trainer.sampler, trainer.meta_learner
    rows = []
    for _ in range(spec["iterations"] + 1):
        t = time.perf_counter()
        report = learner.iteration(sampler.sample_tasks())
        total = time.perf_counter() - t
        rows.append(
            {
                "total": total,
                "collect": report.sampling_s,
                "update": report.optimize_s,
                **{phase: report.timings.get(phase, 0.0) for phase in PHASES},
                "pre": report.returns[0],
                "post": report.returns[-1],
            }
        )
    sampler.close()
    timed = rows[1:]  # the first iteration pays worker start-up and first-touch allocation
    mean = {k: sum(r[k] for r in timed) / len(timed) for k in timed[0]}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**mean, "peak_rss_mib": peak_mib, "iterations": rows}


def run_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """``run_iterations(spec)`` in a fresh interpreter (``_child``); RuntimeError with the end
    of its stderr when it fails."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "_child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> None:
    if "cuda" in args.devices:
        import torch

        if not torch.cuda.is_available():
            sys.exit("benchmarks iteration: --devices cuda, but torch sees no CUDA device")
    rows, details = [], {}
    for variant, device in ((v, d) for d in args.devices for v in args.variants):
        label = variant if args.devices == ["cpu"] else f"{variant}@{device}"
        spec = {
            "device": device,
            "family": args.family,
            "net": args.net,
            "tasks": args.tasks,
            "episodes": args.episodes,
            "horizon": args.horizon,
            "overrides": variant_overrides(variant, args.family, args.overrides),
            "malloc": VARIANTS[variant][1],
            "iterations": args.iterations,
            "threads": args.threads,
            "algo": args.algo,
        }
        before = load()
        try:
            result = run_in_child(spec)
        except RuntimeError as exc:
            print(f"{label}: failed\n{exc}")
            continue
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
        {"rows": rows, "details": details, "args": jsonable(args)},
    )


def register(sub: argparse._SubParsersAction) -> None:
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
    i.set_defaults(fn=run)

    child = sub.add_parser("_child")  # internal: one iteration variant, JSON on stdout
    child.add_argument("spec")
    child.set_defaults(fn=lambda a: print(json.dumps(run_iterations(json.loads(a.spec)))))
