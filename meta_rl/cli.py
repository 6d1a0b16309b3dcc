"""`meta-rl` command line: train, envs, evaluate, plot.

Heavy modules (torch, the trainer, the MuJoCo envs) are imported inside the subcommands, so a
bad config is reported in a fraction of a second. Exit codes: 0 ok, 2 usage or config error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from meta_rl.config import (
    BASELINES,
    ConfigError,
    EvalSettings,
    default_run_dir,
    load_config,
    validation_message,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meta-rl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="meta-train from a YAML config (or resume a run)")
    train.add_argument("config", nargs="?", type=Path, metavar="CONFIG", help="YAML config")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set algo.inner_lr=0.05 (repeatable)",
    )
    train.add_argument(
        "--iterations", type=int, metavar="N", help="same as --set train.iterations=N"
    )
    train.add_argument("--seed", type=int, metavar="N", help="same as --set train.seed=N")
    train.add_argument("--device", help="same as --set train.device=D (cpu, cuda, cuda:N, auto)")
    train.add_argument("--run-dir", type=Path, help="output directory (default: runs/<name>)")
    train.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR with its config.yaml"
    )
    train.set_defaults(handler=_train)

    envs = sub.add_parser("envs", help="list the registered task families")
    envs.add_argument(
        "--rollouts", type=int, metavar="N", help="also print the mean random-policy return"
    )
    envs.add_argument("--seed", type=int, default=0, help="seed of the random rollouts")
    envs.set_defaults(handler=_envs)

    evaluate = sub.add_parser(
        "evaluate", help="adaptation curve of a run (and baselines) on held-out tasks"
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a `meta-rl train` run")
    defaults = EvalSettings()
    evaluate.add_argument(
        "--tasks", type=int, default=defaults.tasks, help="held-out tasks (default %(default)s)"
    )
    evaluate.add_argument(
        "--steps", type=int, default=defaults.steps, help="inner steps K (default %(default)s)"
    )
    evaluate.add_argument(
        "--episodes",
        type=int,
        default=defaults.episodes,
        help="episodes per task and step (default %(default)s)",
    )
    evaluate.add_argument(
        "--seed", type=int, help="held-out task seed (default: the run's train.seed)"
    )
    evaluate.add_argument(
        "--step-size", type=float, help="first inner step size (default: algo.inner_lr)"
    )
    evaluate.add_argument(
        "--later-step-factor",
        type=float,
        default=defaults.later_factor,
        help="steps 2..K use step size * this (default %(default)s, as the MAML paper's scripts)",
    )
    evaluate.add_argument(
        "--baseline",
        dest="baselines",
        action="append",
        default=[],
        choices=BASELINES,
        help="also evaluate this baseline on the same tasks (repeatable)",
    )
    evaluate.add_argument(
        "--baseline-timesteps",
        type=int,
        default=defaults.baseline_timesteps,
        metavar="N",
        help="SB3 PPO env steps of the pretrained / oracle baselines (default %(default)s)",
    )
    evaluate.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/eval)")
    evaluate.add_argument("--threads", type=int, metavar="N", help="torch threads")
    evaluate.set_defaults(handler=_evaluate)

    plot = sub.add_parser(
        "plot", help="put the adaptation curves of several evaluations on one plot"
    )
    plot.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="run dir, eval dir or adaptation.json"
    )
    plot.add_argument("--out", type=Path, required=True, help="PNG file to write")
    plot.add_argument("--title", default="", help="plot title")
    plot.set_defaults(handler=_plot)

    bench = sub.add_parser(
        "bench", help="speed benchmarks (same as python -m benchmarks ...)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="ceiling|sampler|iteration ...")
    bench.set_defaults(handler=_bench)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after it, --help included, belongs to benchmarks
        return _bench(argparse.Namespace(bench_args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_args(args, parser)
    except SystemExit as exc:  # --help (0) and usage errors (2) return instead of exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("meta-rl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Argument combinations argparse cannot express; errors exit 2 like argparse's own."""
    if args.command == "train":
        if args.resume is not None and (args.config is not None or args.run_dir is not None):
            parser.error("train: --resume RUN_DIR takes the config and run dir from RUN_DIR")
        if args.resume is None and args.config is None:
            parser.error("train: give a CONFIG file, or --resume RUN_DIR")
    elif args.command == "envs" and args.rollouts is not None and args.rollouts < 1:
        parser.error("envs: --rollouts must be >= 1")
    elif args.command == "evaluate":
        try:
            args.settings = EvalSettings(
                tasks=args.tasks,
                steps=args.steps,
                episodes=args.episodes,
                seed=args.seed,
                step_size=args.step_size,
                later_factor=args.later_step_factor,
                baselines=tuple(dict.fromkeys(args.baselines)),
                baseline_timesteps=args.baseline_timesteps,
            )
        except ValidationError as exc:  # the field's flag, e.g. later_factor: --later-step-factor
            message = validation_message(exc, EvalSettings)
            field, _, what = message.partition(":")
            flag = (
                "--later-step-factor" if field == "later_factor" else "--" + field.replace("_", "-")
            )
            parser.error(f"evaluate: {flag}:{what}")


def _train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for key, value in (
        ("train.iterations", args.iterations),
        ("train.seed", args.seed),
        ("train.device", args.device),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")

    if args.resume is not None:
        config = load_config(args.resume / "config.yaml", overrides)
        run_dir = args.resume
        from meta_rl.checkpoint import find_latest

        if find_latest(run_dir) is None:
            print(f"meta-rl: error: {run_dir}: no checkpoint to resume from", file=sys.stderr)
            return EXIT_USAGE
    else:
        config = load_config(args.config, overrides)
        run_dir = args.run_dir if args.run_dir is not None else default_run_dir(config)

    train = importlib.import_module("meta_rl.trainer").train
    # the command owns its process: all cores (or train.num_threads) for torch, tuned malloc
    importlib.import_module("meta_rl.perf").configure_learner(config.train.num_threads)
    print(f"run dir: {run_dir}", file=sys.stderr)
    out = train(config, run_dir=run_dir, resume=args.resume)
    print(importlib.import_module("meta_rl.trainer").summary(out))
    return 0


def _envs(args: argparse.Namespace) -> int:
    catalog = importlib.import_module("meta_rl.envs.catalog")
    print(catalog.family_table())
    if args.rollouts:
        ids = catalog.family_ids()
        width = max(map(len, ids), default=0)
        print(f"\nmean return of a uniform random policy over {args.rollouts} episode(s):")
        for env_id in ids:
            mean = catalog.random_policy_return(env_id, args.rollouts, args.seed)
            print(f"{env_id:<{width}}  {mean:12.3f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from meta_rl.checkpoint import find_latest

    if not (args.run_dir / "config.yaml").is_file() or find_latest(args.run_dir) is None:
        print(
            f"meta-rl: error: {args.run_dir}: not a run dir (needs config.yaml and a checkpoint)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    evaluation = importlib.import_module("meta_rl.evaluation")
    if args.threads:
        importlib.import_module("torch").set_num_threads(args.threads)
    settings = args.settings
    out = args.out if args.out is not None else args.run_dir / evaluation.EVAL_DIR
    curves = evaluation.evaluate_run(
        args.run_dir, settings, out_dir=out, progress=lambda m: print(m, file=sys.stderr)
    )
    print(evaluation.curves_table(curves))
    print(out)
    return 0


def _plot(args: argparse.Namespace) -> int:
    evaluation = importlib.import_module("meta_rl.evaluation")
    labelled = []
    for path in args.dirs:
        try:
            _, curves = evaluation.load_results(path)
        except FileNotFoundError as exc:
            print(f"meta-rl: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for curve in curves:
            label = curve.method if len(args.dirs) == 1 else f"{path}: {curve.method}"
            labelled.append((label, curve))
    plotting = importlib.import_module("meta_rl.plotting")
    print(plotting.plot_curves(labelled, args.out, title=args.title))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks/`` of the source checkout this package was installed from (editable)."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "benchmarks" / "__main__.py").is_file():
        print(
            "meta-rl: error: bench needs a source checkout (pip install -e .): "
            f"no benchmarks/ next to {checkout / 'meta_rl'}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    benchmarks = importlib.import_module("benchmarks.__main__")
    try:
        return benchmarks.main(args.bench_args or ["--help"])
    except SystemExit as exc:  # argparse inside the benchmarks: --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
