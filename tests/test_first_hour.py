"""What a new user meets in the first hour: help texts, hints that work, their own families,
readable plots and tables, and output that suits a log file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meta_rl.cli import main
from meta_rl.evaluation import AdaptationCurve, curves_table, write_results
from meta_rl.progress import Progress

from fakes import meta_rl

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

USER_FAMILY = textwrap.dedent(
    """
    import numpy as np
    from gymnasium import spaces
    from gymnasium.envs.registration import register
    from meta_rl.envs import GoalPositionTasks


    class Point2DEnv(GoalPositionTasks):
        def __init__(self) -> None:
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,))
            self.action_space = spaces.Box(-0.1, 0.1, shape=(2,))
            self._init_goal_tasks(-1.0, 1.0)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed, options=options)
            self._x = np.zeros(2)
            return self._x.astype(np.float32), {}

        def step(self, action):
            self._x = self._x + np.clip(action, -0.1, 0.1)
            distance = float(np.linalg.norm(self._x - self._goal))
            return self._x.astype(np.float32), -distance, False, False, {}


    def register_families() -> None:
        register(id="MyFams/Point2D-v0", entry_point=Point2DEnv, max_episode_steps=20)


    register_families()
    """
)


def test_help_lists_bench_and_bench_help_names_itself():
    top = meta_rl("--help", cwd=ROOT)
    assert top.returncode == 0 and "    bench " in top.stdout
    assert "train, envs, evaluate, plot, bench" in top.stdout
    bench = meta_rl("bench", "--help", cwd=ROOT)
    assert bench.returncode == 0
    assert bench.stdout.startswith("usage: meta-rl bench")
    assert "python -m benchmarks" not in bench.stdout and "_child" not in bench.stdout


def test_envs_imports_a_users_module_and_names_a_bad_one(tmp_path):
    (tmp_path / "myfams.py").write_text(USER_FAMILY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listed = meta_rl("envs", "--import", "myfams", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "MyFams/Point2D-v0" in listed.stdout and "MetaRL/Navigation2D-v0" in listed.stdout
    assert "MyFams/Point2D-v0" not in meta_rl("envs", cwd=tmp_path, env=env).stdout

    missing = meta_rl("envs", "--import", "nosuchmodule", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        "meta-rl: error: --import nosuchmodule: ModuleNotFoundError: "
        "No module named 'nosuchmodule'\n"
    )


def test_an_installed_package_registers_families_through_the_entry_point_group(tmp_path):
    (tmp_path / "myfams.py").write_text(USER_FAMILY.replace("\nregister_families()\n", "\n"))
    dist = tmp_path / "myfams-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myfams\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[meta_rl.families]\nmyfams = myfams:register_families\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listed = meta_rl("envs", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "MyFams/Point2D-v0" in listed.stdout
    # the config check sees it too, with no module prefix
    (tmp_path / "c.yaml").write_text("env: {id: MyFams/Point2D-v1}\n")
    wrong = meta_rl("train", "c.yaml", cwd=tmp_path, env=env)
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "config error: env.id: unknown environment 'MyFams/Point2D-v1' "
        "(did you mean 'MyFams/Point2D-v0'?)\n"
    )


def test_did_you_mean_keeps_the_module_prefix(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("env: {id: 'meta_rl.envs:MetaRL/Navigation2D-v1'}\n")
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err == (
        "config error: env.id: unknown environment 'meta_rl.envs:MetaRL/Navigation2D-v1' "
        "(did you mean 'meta_rl.envs:MetaRL/Navigation2D-v0'?)\n"
    )


def test_hints_work_without_an_activated_venv(tmp_path):
    """After `make run` the venv is not on PATH: the printed commands must still run."""
    (tmp_path / "c.yaml").write_text(
        "env: {id: MetaRL/Navigation2D-v0}\npolicy: {hidden_sizes: [4]}\n"
        "train: {meta_batch_size: 2, episodes_per_task: 1, iterations: 1}\n"
    )
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)
    result = meta_rl(
        "train", "c.yaml", "--run-dir", "run", cwd=tmp_path, env={**os.environ, "PATH": path}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [hint] = [line for line in result.stdout.splitlines() if line.startswith("TensorBoard")]
    command = hint.split("(open with: ")[1].split(" --logdir")[0]
    assert Path(command).is_absolute() and Path(command) == BIN / "tensorboard"
    assert result.stderr.count("run dir:") + result.stdout.count("run dir:") == 1
    assert "\r" not in result.stderr  # not a terminal: no progress bar redraws


def test_progress_is_a_plain_line_every_n_units_off_a_terminal(tmp_path):
    log = tmp_path / "log.txt"
    with log.open("w") as stream, Progress(100, unit="it", desc="train", stream=stream) as bar:
        for i in range(100):
            bar.update(1, post=f"{i:.1f}")
    lines = log.read_text().splitlines()
    assert len(lines) == 20
    assert lines[0].startswith("train: 5/100 it, post 4.0 (")
    assert lines[-1].startswith("train: 100/100 it, post 99.0 (")


def _curve(method: str, shift: float) -> AdaptationCurve:
    returns = [[shift + step + task for task in range(3)] for step in range(3)]
    return AdaptationCurve(method, [0.1, 0.05], returns)


def test_terminal_table_says_what_the_plus_minus_is():
    table = curves_table([_curve("maml_trpo", 0.0), _curve("random", -5.0)])
    assert table.splitlines()[-1] == (
        "mean return over 3 held-out tasks ± the half-width of its 95 % confidence interval "
        "(Student t over tasks)"
    )


def test_plot_of_several_runs_has_short_labels_a_title_and_the_legend_outside(
    tmp_path, monkeypatch
):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    for name in (
        "runs/Nav__maml_trpo__1__20261201-101010",
        "runs/Nav__reptile__1__20261201-111111",
    ):
        meta = {"run_dir": name, "env_id": "MetaRL/Navigation2D-v0", "num_tasks": 3}
        write_results(tmp_path / name / "eval", [_curve("maml_trpo", 0.0)], meta)
    seen = []
    real_savefig = Figure.savefig

    def capture(fig, *args, **kwargs):
        ax = fig.axes[0]
        legend = ax.get_legend()
        renderer = fig.canvas.get_renderer()
        seen.append(
            {
                "labels": [t.get_text() for t in legend.get_texts()],
                "title": ax.get_title(),
                "outside": legend.get_window_extent(renderer).x0
                >= ax.get_window_extent(renderer).x1,
            }
        )
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    dirs = [str(tmp_path / "runs" / n) for n in sorted(os.listdir(tmp_path / "runs"))]
    assert main(["plot", *dirs, "--out", str(tmp_path / "both.png")]) == 0
    assert seen[-1] == {
        "labels": [
            "Nav__maml_trpo__1__20261201-101010: maml_trpo",
            "Nav__reptile__1__20261201-111111: maml_trpo",
        ],
        "title": "MetaRL/Navigation2D-v0: adaptation on 3 held-out tasks",
        "outside": True,
    }
    argv = ["plot", *dirs, "--out", str(tmp_path / "b.png"), "--label", "A", "--label", "B"]
    assert main(argv) == 0
    assert seen[-1]["labels"] == ["A: maml_trpo", "B: maml_trpo"]
    assert main([*argv[:-2], "--title", "mine"]) == 2  # one label for two dirs: usage error


def test_a_config_error_is_reported_without_importing_torch(tmp_path):
    (tmp_path / "bad.yaml").write_text("env: {id: MetaRL/Navigation2D-v0}\nalgo: {gamma: 2}\n")
    code = (
        "import sys\nfrom meta_rl.cli import main\n"
        "assert main(['train', 'bad.yaml']) == 2\nsys.exit('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("config error: algo.gamma") and result.stderr.count("\n") == 1
