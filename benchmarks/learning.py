"""``benchmarks learning``: learning curves per variant over seeds, with the real trainer.

Speed changes must not change learning: this puts a variant's curve (mean over seeds of the
post-adaptation return, and its spread) beside the first variant's, at a few iterations.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks.common import (
    VARIANTS,
    add_batch_arguments,
    add_override_argument,
    batch_config,
    table,
    variant_overrides,
    write,
)


def run(args: argparse.Namespace) -> None:
    """Train each variant at each seed; compare returns by iteration."""
    import csv

    from meta_rl.perf import configure_learner
    from meta_rl.trainer import train

    curves: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for variant in args.variants:
        overrides = variant_overrides(variant, args.family, args.overrides)
        for seed in args.seeds:
            config = batch_config(
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


def register(sub: argparse._SubParsersAction) -> None:
    lc = sub.add_parser("learning", help="learning curves per variant over seeds")
    add_batch_arguments(lc)
    lc.add_argument("--iterations", type=int, default=30)
    lc.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    lc.add_argument("--variants", nargs="+", default=["fast", "fast+fisher20%"], choices=VARIANTS)
    add_override_argument(lc)
    lc.set_defaults(fn=run)
