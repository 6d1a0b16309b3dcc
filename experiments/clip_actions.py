"""What ``train.clip_actions`` changes: MAML-TRPO with actions clipped to the Box vs raw samples.

For each family, two runs from the same seed and budget that differ only in
``train.clip_actions``; each is then evaluated on the same held-out tasks (the held-out stream
of ``meta_rl.evaluation``, the same sampler state) before and after one inner step of alpha.
Both are scored twice: with the actions clipped (what the actuators apply: MuJoCo clamps the
control to its range itself, so clipping changes only the control cost that the reward
charges), and under the run's own setting (what its training saw). Writes
``<results-dir>/<name>.md`` and ``.json`` (``--name``, default ``clip_actions``).

    python experiments/clip_actions.py                          # the committed table
    python experiments/clip_actions.py --iterations 2 --tasks 2 --episodes 2   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the fastest sampler each family has (the backends give the same episodes)
FAMILIES = {
    "halfcheetah_vel": ("train.sampler=mujoco",),
    "halfcheetah_dir": ("train.sampler=mujoco", "train.num_workers=2"),
    "reacher_goal": ("train.sampler=vector",),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--families", nargs="+", default=["halfcheetah_vel", "reacher_goal"], choices=FAMILIES
    )
    parser.add_argument("--iterations", type=int, default=30, help="meta-iterations per run")
    parser.add_argument("--tasks", type=int, default=10, help="meta-batch (tasks)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--eval-tasks", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "clip_actions")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--name", default="clip_actions", help="stem of the result files")
    return parser.parse_args(argv)


def evaluate(run_dir: Path, clip: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Mean return (and 95 % half-width) before and after one inner step, actions clipped or not."""
    from meta_rl.builders import advantage_estimator, build_policy
    from meta_rl.evaluation import (
        adaptation_curve,
        held_out_generators,
        held_out_tasks,
        load_run,
        make_eval_sampler,
    )

    config, state = load_run(run_dir)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, clip_actions=clip))
    sampler = make_eval_sampler(config, args.eval_tasks, args.eval_episodes)
    try:
        policy = build_policy(config, sampler, config.train.seed)
        policy.load_state_dict(state)
        tasks = held_out_tasks(sampler, args.eval_tasks, args.seed)
        sampler_state = held_out_generators(args.seed)[1].bit_generator.state
        curve = adaptation_curve(
            "maml_trpo",
            policy,
            sampler,
            tasks,
            [config.algo.inner_lr],
            advantage_estimator(config),
            sampler_state,
        )
    finally:
        sampler.close()
    return {"mean_ci": curve.mean_ci(), "task_returns": curve.task_returns}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "experiments"))
    from reproduce import machine_description, train_or_reuse

    from meta_rl.config import load_config
    from meta_rl.perf import configure_learner

    configure_learner(1)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for family in args.families:
        for clip in (True, False):
            overrides = [
                *FAMILIES[family],
                f"train.iterations={args.iterations}",
                f"train.meta_batch_size={args.tasks}",
                f"train.episodes_per_task={args.episodes}",
                f"train.seed={args.seed}",
                f"train.clip_actions={str(clip).lower()}",
                "train.checkpoint_every=25",  # as reproduce.py's long budget: its run is reused
            ]
            config = load_config(
                ROOT / "experiments" / "configs" / f"maml_{family}.yaml", overrides
            )
            run_dir = args.work_dir / f"{family}_clip_{'on' if clip else 'off'}"
            print(f"[clip_actions] {family} clip_actions={clip}: -> {run_dir}", file=sys.stderr)
            trained = train_or_reuse(config, run_dir)
            scored = {
                f"eval_clip_{'on' if c else 'off'}": evaluate(run_dir, c, args)
                for c in (True, False)
            }
            results.append(
                {
                    "family": family,
                    "env_id": config.env.id,
                    "clip_actions": clip,
                    **trained,
                    **scored,
                }
            )
    write(args, results, load_start, time.perf_counter() - started, machine_description(1))
    return 0


def write(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    load_start: float,
    wall_s: float,
    machine: str,
) -> None:
    from meta_rl.tables import format_table

    def cell(stats: list[tuple[float, float]], step: int) -> str:
        mean, half = stats[step]
        return f"{mean:.1f} ± {half:.1f}"

    header = [
        "family",
        "trained with clip_actions",
        "scored clipped: step 0",
        "step 1",
        "scored as trained: step 0",
        "step 1",
        "training env steps",
        "training wall-clock",
    ]
    rows = []
    for r in results:
        clipped = r["eval_clip_on"]["mean_ci"]
        own = r[f"eval_clip_{'on' if r['clip_actions'] else 'off'}"]["mean_ci"]
        rows.append(
            [
                r["env_id"],
                str(r["clip_actions"]).lower(),
                cell(clipped, 0),
                cell(clipped, 1),
                cell(own, 0),
                cell(own, 1),
                f"{r['train_env_steps'] / 1e6:.2f} M",
                f"{r['train_wall_s']:.0f} s",
            ]
        )
    command = "python experiments/clip_actions.py --families " + " ".join(args.families)
    command += f" --name {args.name}" if args.name != "clip_actions" else ""
    command += "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in (
            ("iterations", args.iterations),
            ("tasks", args.tasks),
            ("episodes", args.episodes),
            ("eval_tasks", args.eval_tasks),
            ("eval_episodes", args.eval_episodes),
            ("seed", args.seed),
        )
    )
    lines = [
        "# train.clip_actions: MAML-TRPO with actions clipped to the Box vs raw samples",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; every "
        "number below was measured by that command (none edited by hand).",
        "",
        f"Budget: each run {args.iterations} meta-iterations of {args.tasks} tasks x "
        f"{args.episodes} episodes (the paper's locomotion runs: 500 x 40 x 20, about "
        f"{500 * 40 * 20 / (args.iterations * args.tasks * args.episodes):.0f} times more), "
        f"seed {args.seed}; the two runs of a family differ only in `train.clip_actions`. "
        f"Evaluation: {args.eval_tasks} held-out tasks, {args.eval_episodes} episodes per task, "
        "mean return before (step 0) and after (step 1) one policy-gradient step of alpha, "
        "± the 95 % Student-t half-width over tasks. *Scored clipped*: both policies act "
        "through clipping (the cost of the torque the actuators apply; MuJoCo clamps the "
        "control itself, so the motion is the same either way). *Scored as trained*: each "
        "with its own setting (without clipping the reward charges the raw sample).",
        "",
        format_table(header, rows, markdown=True),
        "",
        "One seed at a small budget: a difference inside the intervals is not a finding.",
        "",
        f"Machine: {machine}; load average {load_start:.1f} at the start (shared: wall-clock "
        f"is an upper bound). Total wall-clock {wall_s:.0f} s.",
        "",
    ]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.md").write_text("\n".join(lines), encoding="utf-8")
    (args.results_dir / f"{args.name}.json").write_text(
        json.dumps({"command": command, "results": results}, indent=1), encoding="utf-8"
    )
    print(args.results_dir / f"{args.name}.md")


if __name__ == "__main__":
    sys.exit(main())
