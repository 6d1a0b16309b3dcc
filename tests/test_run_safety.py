"""Faults and bad input through the real `meta-rl` process: one line, exit != 0, nothing lost.

Each test runs `python -m meta_rl.cli` in a subprocess (as a user or a job scheduler would)
on a tiny Navigation2D config, and checks the exit code, that stderr is the one line promised
(no traceback), and that the files on disk are exactly what they were, or what they should be.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from meta_rl.checkpoint import load_checkpoint

from fakes import Evil, meta_rl

ROOT = Path(__file__).resolve().parents[1]
TINY = """\
env: {id: MetaRL/Navigation2D-v0}
policy: {hidden_sizes: [8]}
train: {meta_batch_size: 2, episodes_per_task: 2, iterations: 2, seed: 3, checkpoint_every: 1}
"""


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    """The single stderr line of a refused command (and nothing on stdout)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-iteration run, copied by each test that damages it."""
    work = tmp_path_factory.mktemp("finished")
    (work / "tiny.yaml").write_text(TINY)
    result = meta_rl("train", "tiny.yaml", "--run-dir", "run", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("run dir: run") == 1 and "run dir:" not in result.stdout
    return work / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    for name, data in snapshot(finished).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    (tmp_path / "tiny.yaml").write_text(TINY)
    return copy


def test_a_run_dir_holding_a_run_is_refused_and_overwrite_starts_clean(run):
    work, before = run.parent, snapshot(run)
    line = one_line(meta_rl("train", "tiny.yaml", "--run-dir", "run", cwd=work), 2)
    assert line == (
        "meta-rl: error: run already holds a run: continue it with --resume run, "
        "or start over with --overwrite (deletes everything in it)"
    )
    assert snapshot(run) == before

    (run / "checkpoints" / "iter_000099.pt").write_bytes(b"stale")
    (run / "events.out.tfevents.0.stale").write_bytes(b"stale")
    result = meta_rl(
        "train", "tiny.yaml", "--run-dir", "run", "--overwrite", "--iterations", "1", cwd=work
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / "checkpoints" / "iter_000099.pt").exists()
    assert not (run / "events.out.tfevents.0.stale").exists()
    assert [r["iteration"] for r in rows(run)] == ["0"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_000000.pt",
        "latest.pt",
    ]

    other = work / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    line = one_line(meta_rl("train", "tiny.yaml", "--run-dir", "notes", "--overwrite", cwd=work), 2)
    assert line == "meta-rl: error: notes is not empty and holds no run: choose another --run-dir"
    assert (other / "todo.txt").read_text() == "keep me"


def test_resuming_with_another_config_is_refused_before_anything_is_written(run):
    work, before = run.parent, snapshot(run)
    args = ("train", "--resume", "run", "--iterations", "3")
    line = one_line(meta_rl(*args, "--set", "env.id=MetaRL/Bandit-K5-v0", cwd=work), 2)
    assert line.startswith(
        "meta-rl: error: run: cannot resume with a different config: "
        "env.id 'MetaRL/Navigation2D-v0' -> 'MetaRL/Bandit-K5-v0' (a resume may change only "
        "train.iterations, "
    )
    assert snapshot(run) == before

    edited = (run / "config.yaml").read_text().replace("hidden_sizes: [8]", "hidden_sizes: [16]")
    assert edited != before["config.yaml"].decode()
    (run / "config.yaml").write_text(edited)
    line = one_line(meta_rl(*args, cwd=work), 2)
    assert "cannot resume with a different config: policy.hidden_sizes [8] -> [16]" in line
    assert (run / "config.yaml").read_text() == edited  # not rewritten
    assert snapshot(run) == {**before, "config.yaml": edited.encode()}


def test_resume_says_what_it_does_and_when_there_is_nothing_to_do(run):
    work, before = run.parent, snapshot(run)
    result = meta_rl("train", "--resume", "run", cwd=work)
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == (
        "meta-rl: run already has 2 of 2 iterations: nothing to do "
        "(--iterations N continues it up to N in total)\n"
    )
    assert snapshot(run) == before

    result = meta_rl("train", "--resume", "run", "--iterations", "3", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from iteration 2 (run/checkpoints/latest.pt)" in result.stderr
    assert [r["iteration"] for r in rows(run)] == ["0", "1", "2"]


def test_unreadable_checkpoints_are_one_line_and_an_older_good_one_is_offered(run):
    work = run.parent
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    before = snapshot(run)
    args = ("train", "--resume", "run", "--iterations", "3")
    line = one_line(meta_rl(*args, cwd=work), 1)
    assert line == (
        "meta-rl: error: run/checkpoints/latest.pt: truncated or corrupt (1,000 bytes, not a "
        "torch checkpoint archive); run/checkpoints/iter_000001.pt loads: resume from it with "
        "--from-checkpoint iter_000001.pt"
    )
    assert snapshot(run) == before
    line = one_line(meta_rl("evaluate", "run", "--tasks", "2", cwd=work), 1)
    assert line.startswith("meta-rl: error: run/checkpoints/latest.pt: truncated or corrupt")

    marker = work / "executed"
    torch.save({"iteration": 1, "payload": Evil(marker)}, latest)
    line = one_line(meta_rl(*args, cwd=work), 1)
    assert line.startswith(
        "meta-rl: error: run/checkpoints/latest.pt: refused: the file carries code "
        "(fakes._mark_executed) and was not loaded; "
    )
    assert "weights_only" not in line and not marker.exists()

    result = meta_rl(*args, "--from-checkpoint", "iter_000001.pt", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from iteration 2 (run/checkpoints/iter_000001.pt)" in result.stderr
    assert load_checkpoint(latest)["iteration"] == 2


def test_config_errors_found_when_building_leave_no_run_dir(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    line = one_line(
        meta_rl(
            "train", "tiny.yaml", "--set", "env.id=Pendulum-v1", "--run-dir", "r", cwd=tmp_path
        ),
        2,
    )
    assert line == (
        "config error: env.id: 'Pendulum-v1' is not a task family: PendulumEnv does not "
        "subclass meta_rl.envs.TaskEnv (`meta-rl envs` lists the families)"
    )
    kwargs = "env.kwargs={velocity_range: [2.0, 1.0]}"
    cheetah = ("--set", "env.id=MetaRL/HalfCheetahVel-v0", "--set", kwargs)
    line = one_line(meta_rl("train", "tiny.yaml", *cheetah, "--run-dir", "r", cwd=tmp_path), 2)
    assert line.startswith(
        "config error: env: cannot build 'MetaRL/HalfCheetahVel-v0' with env.kwargs "
        "{'velocity_range': [2.0, 1.0]}: ValueError: Box all low values must be less than"
    )
    if not torch.cuda.is_available():
        line = one_line(meta_rl("train", "tiny.yaml", "--device", "cuda", cwd=tmp_path), 2)
        assert line == "config error: train.device: 'cuda' requested but torch sees no CUDA device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no runs/, no r/


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "meta_rl.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can kill it with its workers
    )


def _wait_for_rows(process: subprocess.Popen, run_dir: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "progress.csv").is_file() and len(rows(run_dir)) >= count:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"no {count} iterations within {timeout} s")


def test_sigterm_stops_cleanly_with_one_line_and_the_run_resumes(tmp_path):
    """SIGTERM to the whole process group, as a scheduler sends it: workers included."""
    workers = "checkpoint_every: 1, sampler: process, num_workers: 2}"
    (tmp_path / "tiny.yaml").write_text(TINY.replace("checkpoint_every: 1}", workers))
    process = _start(["train", "tiny.yaml", "--run-dir", "run", "--iterations", "500"], tmp_path)
    _wait_for_rows(process, tmp_path / "run", 2, timeout=240)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["iteration"]
    assert last.startswith(
        f"meta-rl: terminated (SIGTERM); iterations 0-{saved} are saved in run; continue with: "
    )
    assert last.endswith("meta-rl train --resume run")  # `meta-rl` or its path, as on PATH
    assert [int(r["iteration"]) for r in rows(tmp_path / "run")] == list(range(saved + 1))
    result = meta_rl("train", "--resume", "run", "--iterations", str(saved + 2), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [int(r["iteration"]) for r in rows(tmp_path / "run")] == list(range(saved + 2))


FAULTY = """\
import errno, os, sys
from meta_rl.cli import main

real_replace, target = os.replace, os.environ["FAIL_WRITING"]
count = {"n": 0}


def replace(src, dst):  # the rename that publishes a checkpoint: fail it as a full disk would
    if os.path.basename(dst) == target:
        count["n"] += 1
        if count["n"] == int(os.environ["FAIL_AT"]):  # the iteration-2 write of that file
            raise OSError(errno.ENOSPC, "No space left on device")
    return real_replace(src, dst)


os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def _policy(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")["trainer"]["policy"]


def _same_policy(a: Path, b: Path) -> bool:
    pa, pb = _policy(a), _policy(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 4-iteration run: what every interrupted one must end up equal to."""
    work = tmp_path_factory.mktemp("straight")
    (work / "tiny.yaml").write_text(TINY)
    result = meta_rl("train", "tiny.yaml", "--run-dir", "run", "--iterations", "4", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


@pytest.mark.parametrize(("failing", "nth"), [("latest.pt", 3), ("iter_000002.pt", 1)])
def test_a_failed_write_records_the_iteration_completely_or_not_at_all(
    tmp_path, straight, failing, nth
):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "faulty.py").write_text(FAULTY)
    result = subprocess.run(
        [
            sys.executable,
            "faulty.py",
            "train",
            "tiny.yaml",
            "--run-dir",
            "run",
            "--iterations",
            "4",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FAIL_WRITING": failing, "FAIL_AT": str(nth)},
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"meta-rl: error: iteration 2 was not recorded: cannot write run/checkpoints/{failing}: "
        "No space left on device; iterations 0-1 are saved in run; continue with: "
    )
    run = tmp_path / "run"
    # the newest files agree: CSV, numbered checkpoints and latest.pt all end at iteration 1
    assert [r["iteration"] for r in rows(run)] == ["0", "1"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["iter_000000.pt", "iter_000001.pt", "latest.pt"]  # no temp files either
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["iteration"] == 1

    resumed = meta_rl("train", "--resume", "run", "--iterations", "4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["iteration"] for r in rows(run)] == ["0", "1", "2", "3"]
    assert _same_policy(run, straight)


NAN_FAMILY = """\
import numpy as np
from gymnasium import register

from meta_rl.envs.navigation import Navigation2DEnv


class NaNAfter(Navigation2DEnv):
    resets = 0  # per process: 8 resets per iteration of the tiny config, after the sampler's
    # one probe for info["success"] (meta_rl.samplers.base.reports_success)

    def reset(self, *, seed=None, options=None):
        NaNAfter.resets += 1
        return super().reset(seed=seed, options=options)

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, np.nan if NaNAfter.resets > 17 else reward, terminated, truncated, info


register("Test/NaNAfter-v0", entry_point=NaNAfter, max_episode_steps=100)
"""


def test_a_non_finite_reward_stops_with_one_line_and_nothing_of_its_iteration_saved(tmp_path):
    (tmp_path / "nanfamily.py").write_text(NAN_FAMILY)
    (tmp_path / "nan.yaml").write_text(
        TINY.replace("MetaRL/Navigation2D-v0", "nanfamily:Test/NaNAfter-v0")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meta_rl.cli",
            "train",
            "nan.yaml",
            "--run-dir",
            "run",
            "--iterations",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("meta-rl: error: iteration 2: non-finite reward in task ")
    assert "; iterations 0-1 are saved in run; continue with: " in last
    run = tmp_path / "run"
    assert [r["iteration"] for r in rows(run)] == ["0", "1"]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["iteration"] == 1
    assert not (run / "checkpoints" / "iter_000002.pt").exists()


def test_resume_after_kill_9_at_random_moments_with_the_process_sampler_is_bitwise(tmp_path):
    config = TINY.replace(
        "checkpoint_every: 1}", "checkpoint_every: 1, sampler: process, num_workers: 2}"
    )
    config = config.replace("meta_batch_size: 2", "meta_batch_size: 4")
    (tmp_path / "p.yaml").write_text(config)
    straight = meta_rl(
        "train", "p.yaml", "--run-dir", "straight", "--iterations", "5", cwd=tmp_path
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    rng = __import__("numpy").random.default_rng(12)  # seeded: the kill moments reproduce
    for kill in range(2):
        args = (
            ["train", "p.yaml", "--run-dir", "killed"]
            if kill == 0
            else ["train", "--resume", "killed"]
        )
        process = _start([*args, "--iterations", "5"], tmp_path)
        done = len(rows(tmp_path / "killed")) if kill else 0
        _wait_for_rows(process, tmp_path / "killed", done + 1, timeout=240)
        time.sleep(float(rng.uniform(0.0, 1.0)))  # somewhere inside the next iteration
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    resumed = meta_rl("train", "--resume", "killed", "--iterations", "5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    keys = ("iteration", "env_steps", "return_pre_adapt", "return_post_adapt", "trpo_kl")
    assert [[r[k] for k in keys] for r in rows(tmp_path / "killed")] == [
        [r[k] for k in keys] for r in rows(tmp_path / "straight")
    ]
    assert _same_policy(tmp_path / "killed", tmp_path / "straight")
