"""Speed benchmarks (`meta-rl bench` or `python -m benchmarks`): tables on stdout, JSON on disk.

Every table compares against a baseline measured in the same run (a ratio), because absolute
seconds on a shared 2-core box move with the neighbours' load; the load average is recorded
with every result. One module per command (``benchmarks/<command>.py``, its ``register``
adds the subcommand); shared pieces are in ``benchmarks/common.py``. A new command is a new
module and one entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

# modules of this package, one per command
COMMANDS = [
    "ceiling",
    "sampler",
    "iteration",
    "learning",
    "batched_mujoco",
    "mjx",
    "ray_sampler",
    "metaworld",
]


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="speed benchmarks: tables on stdout, JSON on disk"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="JSON directory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"benchmarks.{name}").register(sub)
    args = parser.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
