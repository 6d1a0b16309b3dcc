"""What every benchmark command shares: families, networks, variants, config, table, output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meta_rl.perf import cpu_count
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
    # the batched MuJoCo backend: in-process with a thread per core, and one worker per core
    "fast+mujoco": (["train.sampler=mujoco"], True),
    "fast+mujoco-procs": (["train.sampler=mujoco", f"train.num_workers={cpu_count()}"], True),
    # HalfCheetah on MuJoCo XLA, on the learner's device (the whole iteration on a GPU)
    "fast+mjx": (["train.sampler=mjx"], True),
}


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


def jsonable(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "fn"}


def make_config(
    family: str,
    net: str,
    tasks: int,
    episodes: int,
    horizon: int | None,
    overrides: list[str],
    algo: str = "maml_trpo",
):
    """The run config of a benchmark: family, network, meta-batch, then ``overrides``."""
    from meta_rl.config import config_from_dict

    hidden, act = NETS[net]
    data = {
        "env": {"id": FAMILIES[family], "max_episode_steps": horizon},
        "policy": {"hidden_sizes": hidden, "activation": act},
        "algo": {"name": algo},
        "train": {"meta_batch_size": tasks, "episodes_per_task": episodes, "seed": 1},
    }
    return config_from_dict(data, overrides)


def batch_config(args: argparse.Namespace, overrides: list[str]):
    """``make_config`` for the meta-batch named by ``add_batch_arguments``."""
    return make_config(args.family, args.net, args.tasks, args.episodes, args.horizon, overrides)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The meta-batch every benchmark measures: family, network, tasks x episodes x horizon."""
    parser.add_argument("--family", default="nav", choices=FAMILIES)
    parser.add_argument("--net", default="port", choices=NETS)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=None)


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
