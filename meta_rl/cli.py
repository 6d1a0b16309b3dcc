"""`meta-rl` command line: train, envs, evaluate, plot, bench.

Heavy modules (torch, the trainer, the MuJoCo envs) are imported inside the subcommands, so a
bad config is reported in a fraction of a second. Every error is one line on stderr. Exit
codes: 0 ok, 1 a failure while running (an unreadable checkpoint, a failed write, a non-finite
value), 2 usage, config or run-directory error, 130 interrupted (SIGINT), 143 terminated
(SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from meta_rl.config import (
    BASELINES,
    ConfigError,
    EvalSettings,
    default_run_dir,
    load_config,
    validation_message,
)

if TYPE_CHECKING:
    from meta_rl.callbacks import Callback, TrainingState
    from meta_rl.runs import RunPlan

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as SIGINT raises KeyboardInterrupt: same cleanup."""


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
        "--iterations",
        type=int,
        metavar="N",
        help="same as --set train.iterations=N: the run's total (a resume continues up to N)",
    )
    train.add_argument("--seed", type=int, metavar="N", help="same as --set train.seed=N")
    train.add_argument("--device", help="same as --set train.device=D (cpu, cuda, cuda:N, auto)")
    train.add_argument("--run-dir", type=Path, help="output directory (default: runs/<name>)")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a --run-dir that holds a run: delete everything in it first",
    )
    train.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR with its config.yaml"
    )
    train.add_argument(
        "--from-checkpoint",
        type=Path,
        metavar="FILE",
        help="with --resume: resume from this checkpoint (e.g. iter_000040.pt) not latest.pt",
    )
    train.set_defaults(handler=_train)

    envs = sub.add_parser("envs", help="list the registered task families")
    envs.add_argument(
        "--rollouts", type=int, metavar="N", help="also print the mean random-policy return"
    )
    envs.add_argument("--seed", type=int, default=0, help="seed of the random rollouts")
    envs.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers your own families; repeatable)",
    )
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
        help="SB3 PPO env steps of the pretrained baseline, and the oracle's cap (it stops "
        "once its learning curve is flat); default: the run's own training env steps",
    )
    evaluate.add_argument(
        "--baseline-jobs",
        type=int,
        default=defaults.baseline_jobs,
        metavar="N",
        help="train the SB3 baselines N at a time, one process and one torch thread each",
    )
    evaluate.add_argument(
        "--clip-actions",
        choices=("on", "off"),
        help="score every method with actions clipped to the Box (on) or raw (off); "
        "default: the run's train.clip_actions",
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
    plot.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        help="legend name of each DIR in order (default: its run name; repeatable)",
    )
    plot.add_argument("--title", help="plot title (default: the family and the task count)")
    plot.set_defaults(handler=_plot)

    bench = sub.add_parser(
        "bench", help="speed benchmarks (needs a source checkout)", add_help=False
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
        with _sigterm_as_interrupt():
            return args.handler(args)
    except KeyboardInterrupt as exc:
        print(f"meta-rl: {_interrupted(exc)}", file=sys.stderr)
        return _interrupt_code(exc)
    except Exception as exc:
        code = _error_code(exc)
        if code is None:  # a bug: keep its traceback
            raise
        print(_error_line(exc), file=sys.stderr)
        return code


def _error_code(exc: Exception) -> int | None:
    """The exit code of an error reported in one line, None for anything else. The error
    classes are looked up only in modules already imported, so a config error costs no torch."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    for module, name, code in (
        ("meta_rl.runs", "RunDirError", EXIT_USAGE),
        ("meta_rl.checkpoint", "CheckpointError", EXIT_FAILURE),
        ("meta_rl.samplers.ray_sampler", "RayClusterError", EXIT_FAILURE),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return code
    return None


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ConfigError) else f"meta-rl: error: {text}"


def _interrupted(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def _interrupt_code(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` while a command runs; the old handler comes back after."""

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Argument combinations argparse cannot express; errors exit 2 like argparse's own."""
    if args.command == "train":
        if args.resume is not None and (args.config is not None or args.run_dir is not None):
            parser.error("train: --resume RUN_DIR takes the config and run dir from RUN_DIR")
        if args.resume is None and args.config is None:
            parser.error("train: give a CONFIG file, or --resume RUN_DIR")
        if args.resume is not None and args.overwrite:
            parser.error("train: --overwrite starts a new run; it cannot go with --resume")
        if args.from_checkpoint is not None and args.resume is None:
            parser.error("train: --from-checkpoint needs --resume RUN_DIR")
    elif args.command == "envs" and args.rollouts is not None and args.rollouts < 1:
        parser.error("envs: --rollouts must be >= 1")
    elif args.command == "plot" and args.labels and len(args.labels) != len(args.dirs):
        parser.error(f"plot: give one --label per DIR ({len(args.labels)} for {len(args.dirs)})")
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
                baseline_jobs=args.baseline_jobs,
                clip_actions=None if args.clip_actions is None else args.clip_actions == "on",
            )
        except ValidationError as exc:  # the field's flag, e.g. later_factor: --later-step-factor
            message = validation_message(exc, EvalSettings)
            field, _, what = message.partition(":")
            flag = (
                "--later-step-factor" if field == "later_factor" else "--" + field.replace("_", "-")
            )
            parser.error(f"evaluate: {flag}:{what}")


def _command(name: str) -> str:
    """How to run this environment's console script ``name`` from here: the bare name when
    the PATH finds it, else its path (``.venv/bin/meta-rl`` when .venv is not activated)."""
    local = Path(sys.executable).parent / name
    if not local.is_file():
        return name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == local.resolve():
        return name
    with contextlib.suppress(ValueError):
        return str(local.relative_to(Path.cwd()))
    return str(local)


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
        run_dir = args.resume
        if not (run_dir / "config.yaml").is_file():
            print(f"meta-rl: error: {run_dir}: not a run dir (no config.yaml)", file=sys.stderr)
            return EXIT_USAGE
        config = load_config(run_dir / "config.yaml", overrides)
    else:
        config = load_config(args.config, overrides)
        run_dir = args.run_dir if args.run_dir is not None else default_run_dir(config)

    # Everything that can refuse the run does so here, before a line about it is printed.
    device = importlib.import_module("meta_rl.builders").resolve_device(config.train.device)
    plan = importlib.import_module("meta_rl.runs").plan_run(
        config,
        run_dir,
        resume=args.resume is not None,
        overwrite=args.overwrite,
        checkpoint=args.from_checkpoint,
        map_location=device,
    )
    if plan.nothing_to_do:
        print(
            f"meta-rl: {run_dir} already has {plan.done} of {plan.total} iterations: nothing to "
            "do (--iterations N continues it up to N in total)",
            file=sys.stderr,
        )
        return 0
    # the command owns its process: torch threads (train.num_threads), tuned malloc
    importlib.import_module("meta_rl.perf").configure_learner(config.train.num_threads)
    trainer = importlib.import_module("meta_rl.trainer")
    from meta_rl.finite import NonFiniteError
    from meta_rl.runs import RecordError

    try:
        out = trainer.train(
            config,
            run_dir=run_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            checkpoint=plan.checkpoint,
            callbacks=[_announcer(plan)],
        )
    except KeyboardInterrupt as exc:
        print(f"meta-rl: {_interrupted(exc)}; {_saved(run_dir)}", file=sys.stderr)
        return _interrupt_code(exc)
    except (RecordError, NonFiniteError) as exc:  # the iteration it names was not recorded
        print(f"meta-rl: error: {exc}; {_saved(run_dir)}", file=sys.stderr)
        return EXIT_FAILURE
    line = trainer.summary(out)
    if line:
        print(line)
    print(f"TensorBoard logs: {out}  (open with: {_command('tensorboard')} --logdir {out})")
    return 0


def _announcer(plan: RunPlan) -> Callback:
    """A callback that names the run directory once it exists (never for a run refused while
    its envs were built) and, on a resume, where it continues."""
    from meta_rl.callbacks import Callback

    class Announce(Callback):
        def on_training_start(self, state: TrainingState) -> None:
            print(f"run dir: {plan.run_dir}", file=sys.stderr)
            if plan.state is not None:
                print(f"resuming from iteration {plan.done} ({plan.checkpoint})", file=sys.stderr)

    return Announce()


def _saved(run_dir: Path) -> str:
    """What an interrupted run kept, and how to continue it."""
    from meta_rl.checkpoint import CheckpointError, find_latest, load_checkpoint

    latest = find_latest(run_dir)
    try:
        done = int(load_checkpoint(latest)["iteration"]) + 1 if latest else 0
    except (CheckpointError, KeyError, TypeError, ValueError):
        done = 0
    if not done:
        return f"no iteration was saved in {run_dir}"
    return (
        f"iterations 0-{done - 1} are saved in {run_dir}; continue with: "
        f"{_command('meta-rl')} train --resume {run_dir}"
    )


def _envs(args: argparse.Namespace) -> int:
    catalog = importlib.import_module("meta_rl.envs.catalog")
    for module in args.imports:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the user's module: any error is theirs to read in one line
            why = f"{type(exc).__name__}: {exc}"
            print(f"meta-rl: error: --import {module}: {why}", file=sys.stderr)
            return EXIT_USAGE
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
    loaded = []
    for path in args.dirs:
        try:
            loaded.append((path, *evaluation.load_results(path)))
        except (OSError, ValueError, KeyError) as exc:
            print(f"meta-rl: error: {path}: cannot read the evaluation: {exc}", file=sys.stderr)
            return EXIT_USAGE
    names = args.labels or _run_names([(path, meta) for path, meta, _ in loaded])
    labelled = [
        (curve.method if len(loaded) == 1 else f"{name}: {curve.method}", curve)
        for name, (_, _, curves) in zip(names, loaded, strict=True)
        for curve in curves
    ]
    title = args.title
    if title is None:
        families = {meta.get("env_id", "?") for _, meta, _ in loaded}
        tasks = {meta.get("num_tasks", "?") for _, meta, _ in loaded}
        family = families.pop() if len(families) == 1 else "several families"
        count = f"{tasks.pop()} " if len(tasks) == 1 else ""
        title = f"{family}: adaptation on {count}held-out tasks"
    plotting = importlib.import_module("meta_rl.plotting")
    print(plotting.plot_curves(labelled, args.out, title=title))
    return 0


def _run_names(loaded: list[tuple[Path, dict]]) -> list[str]:
    """Each evaluation's run name (its run dir's last part); the path as given where two
    runs share a name."""
    names = [Path(meta.get("run_dir") or path).name for path, meta in loaded]
    return [
        name if names.count(name) == 1 else str(path)
        for name, (path, _) in zip(names, loaded, strict=True)
    ]


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
        return benchmarks.main(args.bench_args or ["--help"], prog="meta-rl bench")
    except SystemExit as exc:  # argparse inside the benchmarks: --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
