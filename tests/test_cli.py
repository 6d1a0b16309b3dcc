from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import gymnasium
import pytest

import meta_rl.perf
from meta_rl.checkpoint import save_checkpoint
from meta_rl.cli import main
from meta_rl.config import Config, config_to_dict, load_config, save_config
from meta_rl.envs import TaskEnv

DUMMY_ID = "MetaRLTest/CliDummy-v0"
ROOT = Path(__file__).resolve().parents[1]


class DummyEnv(TaskEnv):
    def __init__(self, goal_range: float = 0.5) -> None:
        raise AssertionError("the CLI must not build environments while validating")


@pytest.fixture(autouse=True)
def dummy_env():
    gymnasium.register(DUMMY_ID, entry_point=DummyEnv, max_episode_steps=5)
    yield
    del gymnasium.envs.registry[DUMMY_ID]


@pytest.fixture(autouse=True)
def process_settings(monkeypatch):
    """Stands in for meta_rl.perf.configure_learner (the test process keeps its threads)."""
    calls: list[int | None] = []
    monkeypatch.setattr(meta_rl.perf, "configure_learner", calls.append)
    return calls


@pytest.fixture
def fake_train(monkeypatch, process_settings):
    """Stands in for meta_rl.trainer: records each call and returns the run dir."""
    calls: list[dict] = []

    def train(
        config: Config, run_dir: Path | None = None, resume: Path | None = None, **kw
    ) -> Path:
        configured = list(process_settings)
        calls.append({"config": config, "run_dir": run_dir, "resume": resume, "perf": configured})
        calls[-1].update(kw)
        for callback in kw["callbacks"]:
            callback.on_training_start(None)
        return Path(run_dir)

    monkeypatch.setitem(
        sys.modules, "meta_rl.trainer", types.SimpleNamespace(train=train, summary=str)
    )
    return calls


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"env: {{id: {DUMMY_ID}}}\nalgo: {{inner_lr: 0.5}}\ntrain: {{seed: 4}}\n")
    return path


def test_train_applies_set_then_flags_and_passes_run_dir(fake_train, config_file, tmp_path, capsys):
    code = main(
        [
            "train",
            str(config_file),
            "--set",
            "algo.inner_lr=0.05",
            "--set",
            "train.seed=5",
            "--set",
            "policy.hidden_sizes=[32, 32]",
            "--seed",
            "9",  # flags win over --set
            "--iterations",
            "3",
            "--device",
            "auto",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0
    [call] = fake_train
    cfg = call["config"]
    assert (cfg.algo.inner_lr, cfg.train.seed, cfg.train.iterations) == (0.05, 9, 3)
    assert (cfg.train.device, cfg.policy.hidden_sizes) == ("auto", [32, 32])
    assert call["run_dir"] == tmp_path / "run" and call["resume"] is None
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(tmp_path / "run")  # the fake summary: str(run_dir)
    assert err == f"run dir: {tmp_path / 'run'}\n"


def test_train_command_configures_the_process_before_training(fake_train, config_file):
    """`meta-rl train` owns its process: threads and malloc are set before train() runs."""
    assert main(["train", str(config_file), "--run-dir", "run"]) == 0
    assert (
        main(["train", str(config_file), "--run-dir", "run", "--set", "train.num_threads=3"]) == 0
    )
    assert [call["perf"] for call in fake_train] == [[1], [1, 3]]  # one thread by default


def test_train_default_run_dir_is_env_algo_seed_time(
    fake_train, config_file, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config_file)]) == 0
    run_dir = fake_train[0]["run_dir"]
    assert run_dir.parent == Path("runs")
    assert re.fullmatch(r"CliDummy-v0__maml_trpo__4__\d{8}-\d{6}", run_dir.name)
    assert fake_train[0]["config"].algo.inner_lr == 0.5  # file value, no override


def test_resume_reads_the_run_config_and_accepts_overrides(fake_train, config_file, tmp_path):
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    save_config(load_config(config_file, ["train.iterations=2"]), run_dir / "config.yaml")
    assert main(["train", "--resume", str(run_dir)]) == 2  # no checkpoint yet
    latest = run_dir / "checkpoints" / "latest.pt"
    state = {"iteration": 1, "env_steps": 10, "trainer": {}, "logger": {}}
    save_checkpoint(latest, {**state, "config": config_to_dict(load_config(config_file))})

    assert main(["train", "--resume", str(run_dir), "--iterations", "6"]) == 0
    [call] = fake_train
    assert call["run_dir"] == run_dir and call["resume"] == run_dir
    assert call["checkpoint"] == latest
    assert (call["config"].train.iterations, call["config"].algo.inner_lr) == (6, 0.5)


BAD = [
    (["--set", "algo.inner_lrr=1"], "config error: unknown key 'algo.inner_lrr'"),
    (
        ["--set", "train.meta_batch_size=0"],
        "config error: train.meta_batch_size: must be >= 1, got 0",
    ),
    (["--iterations", "-2"], "config error: train.iterations: must be >= 0, got -2"),
    (
        ["--device", "tpu"],
        "config error: train.device: must be one of cpu, cuda, auto, cuda:N, got 'tpu'",
    ),
    (
        ["--set", "env.id=MetaRL/Nope-v0"],
        "config error: env.id: unknown environment 'MetaRL/Nope-v0'",
    ),
    (["--set", "algo.gamma=true"], "config error: algo.gamma: expected float, got True (bool)"),
    (
        ["--set", "algo.name=ppo"],
        "config error: algo.name: must be one of maml_trpo, reptile, promp, got 'ppo'",
    ),
    (
        ["--set", "policy.activation=swish"],
        "config error: policy.activation: must be one of relu, tanh, sigmoid, elu, gelu, silu, "
        "softplus, leaky_relu, got 'swish'",
    ),
    (
        ["--set", "inner_lr"],
        "config error: override 'inner_lr': expected KEY=VALUE, e.g. algo.inner_lr=0.05",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_config_prints_one_line_and_exits_2(fake_train, config_file, capsys, args, message):
    assert main(["train", str(config_file), *args]) == 2
    out, err = capsys.readouterr()
    assert err == message + "\n"
    assert out == ""
    assert fake_train == []


def test_unreadable_config_files_exit_2(fake_train, tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("config error: cannot read ")
    (tmp_path / "list.yaml").write_text("- a\n")
    assert main(["train", str(tmp_path / "list.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.endswith("expected a mapping at top level, got list\n") and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fly"],
        ["train"],  # neither CONFIG nor --resume
        ["train", "c.yaml", "--resume", "runs/x"],
        ["train", "c.yaml", "--iterations", "many"],
        ["train", "c.yaml", "--bogus"],
        ["envs", "--rollouts", "0"],
    ],
)
def test_usage_errors_exit_2(fake_train, capsys, argv):
    assert main(argv) == 2
    assert "usage: meta-rl" in capsys.readouterr().err
    assert fake_train == []


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_interrupt_exits_130_and_config_errors_from_train_exit_2(monkeypatch, config_file, capsys):
    from meta_rl.config import ConfigError

    def interrupted(config, run_dir=None, resume=None, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(
        sys.modules, "meta_rl.trainer", types.SimpleNamespace(train=interrupted, summary=str)
    )
    assert main(["train", str(config_file), "--run-dir", "x"]) == 130
    assert capsys.readouterr().err.endswith("meta-rl: interrupted; no iteration was saved in x\n")

    def bad(config, run_dir=None, resume=None, **kwargs):
        raise ConfigError("env.kwargs.goal_range: must be positive")

    monkeypatch.setitem(sys.modules, "meta_rl.trainer", types.SimpleNamespace(train=bad))
    assert main(["train", str(config_file), "--run-dir", "x"]) == 2
    assert capsys.readouterr().err.endswith(
        "config error: env.kwargs.goal_range: must be positive\n"
    )


def test_envs_prints_table_and_random_returns(monkeypatch, capsys):
    calls = []

    def random_policy_return(env_id, episodes, seed):
        calls.append((env_id, episodes, seed))
        return -1.25 * len(calls)

    catalog = types.SimpleNamespace(
        family_table=lambda: "TABLE",
        family_ids=lambda: ["MetaRL/A-v0", "MetaRL/Longer-v0"],
        random_policy_return=random_policy_return,
    )
    monkeypatch.setitem(sys.modules, "meta_rl.envs.catalog", catalog)
    assert main(["envs"]) == 0
    assert capsys.readouterr().out == "TABLE\n"
    assert calls == []

    assert main(["envs", "--rollouts", "3", "--seed", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert calls == [("MetaRL/A-v0", 3, 7), ("MetaRL/Longer-v0", 3, 7)]
    assert out[-2:] == ["MetaRL/A-v0             -1.250", "MetaRL/Longer-v0        -2.500"]


def test_real_process_exit_code_and_single_stderr_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("env: {id: MetaRL/Navigation2D-v0}\ntrain: {meta_batch_size: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "meta_rl.cli", "train", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "config error: train.meta_batch_size: must be >= 1, got 0\n"
    assert result.stdout == ""
