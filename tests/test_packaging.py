"""Installed import names cannot collide with a user's own ``envs/`` or ``agents/`` folders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

USER_SCRIPT = textwrap.dedent(
    """
    import csv, sys
    from pathlib import Path

    from meta_rl.cli import main
    from meta_rl.config import config_from_dict
    from meta_rl.envs.catalog import family_table
    from meta_rl.trainer import train

    assert main(["envs"]) == 0
    assert "MetaRL/Navigation2D-v0" in family_table()
    config = config_from_dict(
        {
            "env": {"id": "MetaRL/Navigation2D-v0"},
            "policy": {"hidden_sizes": [8]},
            "train": {"meta_batch_size": 2, "episodes_per_task": 2, "iterations": 2},
        }
    )
    run_dir = train(config, run_dir=Path("run"))
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    print("iterations", len(rows))
    """
)


def test_user_folders_named_envs_and_agents_do_not_shadow_meta_rl(tmp_path):
    for name in ("envs", "agents", "benchmarks"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s {name}')\n")
    (tmp_path / "script.py").write_text(USER_SCRIPT)
    out = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "iterations 2" in out.stdout
    assert "MetaRL/Navigation2D-v0" in out.stdout  # `meta-rl envs` listed the families


def test_benchmarks_are_not_an_installed_package(tmp_path):
    code = (
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('benchmarks') is not None)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
