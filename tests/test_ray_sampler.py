"""RaySampler on real Ray: the same episodes as the local samplers, faults that lose nothing,
loopback only, one-line errors, and training on a two-node cluster started with `ray start`.

Ray's start costs seconds: one private local Ray (2 CPUs, started the way the sampler starts
it) serves every in-process test of this module; the CLI tests start their own Ray in their
own processes. Every Ray process a test starts is stopped, and checked to be gone.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from meta_rl.agents.policies import make_policy
from meta_rl.algorithms import closed_form
from meta_rl.config import ConfigError, config_from_dict
from meta_rl.episodes import Episodes
from meta_rl.functional import policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers.process import ProcessSampler
from meta_rl.samplers.ray_sampler import RaySampler, connect

from fakes import meta_rl

ray = pytest.importorskip("ray")  # the ray extra is in the pinned test environment (Makefile)
NAV, CHEETAH = "MetaRL/Navigation2D-v0", "MetaRL/HalfCheetahVel-v0"
ROOT = Path(__file__).resolve().parents[1]


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them (Ray workers are the raylet's children)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(pids), True
    while grew:
        below = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= below
        grew = bool(below)
    return found


def _session_pids(marker: str) -> set[int]:
    """Processes whose command line names ``marker`` (a Ray session or temp dir), and their
    children, this process excluded."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                pids.add(int(cmdline.parent.name))
        except OSError:
            continue
    return _descendants(pids) - {os.getpid()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


def _stop(pids: set[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not _wait_gone(pids, timeout=10):
            return


@pytest.fixture(scope="module")
def local_ray():
    """One private local Ray with 2 CPUs for the module, stopped (every process) at its end."""
    assert not ray.is_initialized()
    assert connect(None, num_cpus=2) is True
    session = ray._private.worker.global_worker.node.get_session_dir_path()
    try:
        yield session
    finally:
        pids = _session_pids(session)
        ray.shutdown()
        left = _wait_gone(pids)
        _stop(left)
        assert not left, f"Ray processes left after ray.shutdown(): {sorted(left)}"


def _per_task_params(policy, num_tasks, seed):
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + 0.05 * torch.randn((num_tasks, *v.shape), generator=gen)
        for k, v in policy_params(policy).items()
    }


def _assert_bitwise(a: Episodes, b: Episodes) -> None:
    expected = b.tensors()
    assert a.tensors().keys() == expected.keys()
    for name, tensor in a.tensors().items():
        assert torch.equal(tensor, expected[name]), name


def _kwargs(num_tasks: int, episodes: int, steps: int) -> dict:
    return {
        "num_tasks": num_tasks,
        "episodes_per_task": episodes,
        "seed": 11,
        "max_episode_steps": steps,
        "task_forward": closed_form.task_forward,  # what builders hand every sampler
    }


def test_same_episodes_as_the_vector_and_process_samplers(local_ray):
    """Bitwise, phase after phase, for 1 and 2 actors and against 2 worker processes."""
    kwargs = _kwargs(num_tasks=4, episodes=3, steps=7)
    vector = VectorSampler(NAV, **kwargs)
    policy = make_policy(vector.observation_space, vector.action_space, (16,), "tanh")
    phases = []
    for phase in range(2):
        tasks = vector.sample_tasks()
        params = _per_task_params(policy, 4, phase)
        phases.append((tasks, params, vector.sample(policy, params, tasks)))
    for make in (
        lambda: RaySampler(NAV, num_workers=1, **kwargs),
        lambda: RaySampler(NAV, num_workers=2, **kwargs),
        lambda: ProcessSampler(NAV, num_workers=2, **kwargs),
    ):
        with make() as sampler:
            for tasks, params, expected in phases:
                assert sampler.sample_tasks() == tasks
                _assert_bitwise(sampler.sample(policy, params, tasks), expected)


@pytest.mark.parametrize("env_id", [NAV, "MetaRL/Bandit-K5-v0"], ids=["gaussian", "categorical"])
def test_one_task_per_actor_is_bitwise_the_vector_sampler(local_ray, env_id):
    kwargs = _kwargs(num_tasks=2, episodes=3, steps=7)
    vector = VectorSampler(env_id, **kwargs)
    policy = make_policy(vector.observation_space, vector.action_space, (16,), "tanh")
    tasks = vector.sample_tasks()
    params = _per_task_params(policy, 2, 0)
    expected = vector.sample(policy, params, tasks)
    with RaySampler(env_id, num_workers=2, **kwargs) as sampler:
        assert sampler.sample_tasks() == tasks
        _assert_bitwise(sampler.sample(policy, params, tasks), expected)


def test_meta_world_success_comes_back_from_the_actors(local_ray):
    """A family that reports ``info["success"]``: the actors' episodes carry it, bitwise as
    the process sampler's (ML1 reach, 2 tasks, one shard each)."""
    from meta_rl.envs.metaworld_ids import family_id

    kwargs = _kwargs(num_tasks=2, episodes=1, steps=5)
    env_id = family_id("ML1", "reach-v3")
    with ProcessSampler(env_id, num_workers=2, **kwargs) as process:
        policy = make_policy(process.observation_space, process.action_space, (16,), "tanh")
        tasks = process.sample_tasks()
        params = _per_task_params(policy, 2, 0)
        expected = process.sample(policy, params, tasks)
    assert expected.success is not None
    with RaySampler(env_id, num_workers=2, **kwargs) as sampler:
        assert sampler.sample_tasks() == tasks
        _assert_bitwise(sampler.sample(policy, params, tasks), expected)


def test_actors_step_the_batched_mujoco_backend_when_the_config_asks(local_ray):
    """``train.ray_env_backend: mujoco`` from a config: the actors hold the batched MuJoCo
    envs (issue 15's backend) and give the vector sampler's episodes bitwise."""
    from meta_rl.builders import build_sampler

    data = {
        "env": {"id": CHEETAH, "max_episode_steps": 6},
        "train": {"meta_batch_size": 3, "episodes_per_task": 2, "seed": 11, "num_workers": 2},
    }
    vector = build_sampler(config_from_dict(data), torch.device("cpu"))
    data["train"] |= {"sampler": "ray", "ray_env_backend": "mujoco"}
    policy = make_policy(vector.observation_space, vector.action_space, (16,), "tanh")
    params = _per_task_params(policy, 3, 0)
    tasks = vector.sample_tasks()
    expected = vector.sample(policy, params, tasks)
    vector.close()
    with build_sampler(config_from_dict(data), torch.device("cpu")) as sampler:
        assert isinstance(sampler, RaySampler) and sampler.env_backend == "mujoco"
        assert sampler.sample_tasks() == tasks
        _assert_bitwise(sampler.sample(policy, params, tasks), expected)


def test_a_dead_actor_is_replaced_and_its_shard_resampled_bitwise(local_ray, caplog):
    """Killed by ``ray.kill`` before a phase, then its process by SIGKILL in the middle of
    one: each time the phase's episodes are those of the same phase without a fault."""
    kwargs = _kwargs(num_tasks=4, episodes=8, steps=1000)  # a phase long enough to kill into
    with RaySampler(CHEETAH, num_workers=2, **kwargs) as sampler:
        policy = make_policy(sampler.observation_space, sampler.action_space, (16,), "tanh")
        params = _per_task_params(policy, 4, 0)
        for restarts, how in enumerate(("ray.kill", "SIGKILL mid-phase"), 1):
            tasks = sampler.sample_tasks()
            state = sampler.rng_state()
            expected = sampler.sample(policy, params, tasks)  # the phase without a fault
            sampler.set_rng_state(state)
            victim = sampler.worker_pids[1]
            killer = threading.Timer(0.1, os.kill, (victim, signal.SIGKILL))
            if how == "ray.kill":
                ray.kill(sampler.actors[1])
            else:
                killer.start()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="meta_rl.samplers.ray_sampler"):
                episodes = sampler.sample(policy, params, tasks)
            if how != "ray.kill":
                killer.join()
            _assert_bitwise(episodes, expected)
            assert sampler.restarts == restarts and sampler.worker_pids[1] != victim, how
            [record] = caplog.records
            message = record.getMessage()
            assert "\n" not in message
            assert f"actor 1 (pid {victim} on 127.0.0.1, tasks 2-3) died while sampling" in message
    assert not _wait_gone({victim, *sampler.worker_pids})


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state owned by ``pids``."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(cols[1].split(":")[0])
                words = [raw[i : i + 4][::-1] for i in range(0, size, 4)]  # host order words
                found.add(
                    socket.inet_ntop(
                        socket.AF_INET if size == 4 else socket.AF_INET6, b"".join(words)
                    )
                )
    return found


def test_the_local_ray_listens_on_loopback_only_and_writes_no_token_file(local_ray):
    with RaySampler(NAV, 2, 2, num_workers=2, seed=0, max_episode_steps=3):
        addresses = _listening_addresses(_session_pids(local_ray) | {os.getpid()})
    assert addresses, "no listening socket found: the check would pass vacuously"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses
    assert not (Path.home() / ".ray" / "auth_token").exists()


def test_asking_for_ray_without_ray_is_a_config_error_naming_the_extra(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a)
    )
    data = {"env": {"id": NAV}, "train": {"sampler": "ray"}}
    with pytest.raises(ConfigError, match=r"train\.sampler: .*pip install 'meta-rl\[ray\]'"):
        config_from_dict(data)
    with pytest.raises(ConfigError, match=r"train\.ray_address: is only used by"):
        config_from_dict({"env": {"id": NAV}, "train": {"ray_address": "auto"}})
    with pytest.raises(ConfigError, match=r"train\.ray_env_backend: is only used by"):
        config_from_dict({"env": {"id": NAV}, "train": {"ray_env_backend": "mujoco"}})


TINY = """\
env: {id: MetaRL/Navigation2D-v0}
policy: {hidden_sizes: [8]}
train: {meta_batch_size: 4, episodes_per_task: 2, iterations: 2, seed: 3, num_workers: 2}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_one_line_before_anything_is_written(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    result = meta_rl(
        "train",
        "tiny.yaml",
        "--set",
        "train.sampler=ray",
        "--set",
        f"train.ray_address={address}",
        cwd=tmp_path,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"meta-rl: error: train.ray_address: cannot reach the Ray cluster at '{address}' "
        "(Connection refused)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def _progress(run_dir: Path) -> list[list[str]]:
    keys = ("iteration", "env_steps", "return_pre_adapt", "return_post_adapt", "trpo_kl")
    with (run_dir / "progress.csv").open(newline="") as f:
        return [[row[k] for k in keys] for row in csv.DictReader(f)]


def test_training_on_a_two_node_cluster_matches_the_process_sampler(tmp_path):
    """`ray start --head` plus a second `ray start --address` with its own CPU, both on this
    machine; `meta-rl train` joins it and spreads one actor on each node. Bitwise the run of
    two worker processes (the same shards; against ``vector`` the float32 forward of a
    shard-sized batch may round differently, as for the process sampler)."""
    temp_dir = Path(f"/tmp/mrl-ray-{secrets.token_hex(4)}")  # short: Ray's socket paths
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    port = _free_port()
    try:
        head = subprocess.run(
            [
                *ray_cli,
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(port),
                "--num-cpus",
                "1",
                "--include-dashboard",
                "false",
                "--temp-dir",
                str(temp_dir),
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert head.returncode == 0, head.stderr[-3000:]
        # Ray resolves 127.0.0.1 to this machine's address for a cluster: read what it chose
        address = (temp_dir / "ray_current_cluster").read_text().strip()
        second = subprocess.run(
            [*ray_cli, "start", "--address", address, "--num-cpus", "1", "--disable-usage-stats"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        (tmp_path / "tiny.yaml").write_text(TINY)
        on_ray = meta_rl(
            "train",
            "tiny.yaml",
            "--run-dir",
            "ray",
            "--set",
            "train.sampler=ray",
            "--set",
            f"train.ray_address={address}",
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    finally:
        _stop(_session_pids(str(temp_dir)))
    assert not _session_pids(str(temp_dir))
    local = meta_rl(
        "train",
        "tiny.yaml",
        "--run-dir",
        "process",
        "--set",
        "train.sampler=process",
        cwd=tmp_path,
        timeout=300,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    assert len(_progress(tmp_path / "ray")) == 2
    assert _progress(tmp_path / "ray") == _progress(tmp_path / "process")


def test_resume_after_kill_9_of_the_driver_is_bitwise_and_leaves_no_ray_behind(tmp_path):
    """The driver (with the private Ray it started) killed by SIGKILL inside an iteration, then
    `--resume`: the same rows and policy as a straight run (the harness of
    ``test_run_safety``'s process-sampler test)."""
    from test_run_safety import _same_policy, _start, _wait_for_rows, rows

    temp_dir = f"/tmp/mrl-ray-{secrets.token_hex(4)}"  # RAY_TMPDIR: this test's Ray sessions
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    env.pop("RAY_AUTH_TOKEN", None)  # each driver makes its own, as a user's would
    config = TINY.replace("num_workers: 2}", "num_workers: 2, checkpoint_every: 1}")
    (tmp_path / "r.yaml").write_text(config)
    sampler = ["--set", "train.sampler=ray"]
    try:
        straight = meta_rl(
            "train", "r.yaml", "--run-dir", "straight", *sampler, cwd=tmp_path, env=env
        )
        assert straight.returncode == 0, straight.stderr[-3000:]
        process = _start(["train", "r.yaml", "--run-dir", "killed", *sampler], tmp_path, env)
        _wait_for_rows(process, tmp_path / "killed", 1, timeout=240)
        time.sleep(0.3)  # inside the next iteration
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        resumed = meta_rl("train", "--resume", "killed", cwd=tmp_path, env=env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not _wait_gone(_session_pids(temp_dir)), "Ray processes outlived their driver"
    finally:
        _stop(_session_pids(temp_dir))
    keys = ("iteration", "env_steps", "return_pre_adapt", "return_post_adapt", "trpo_kl")
    assert [[r[k] for k in keys] for r in rows(tmp_path / "killed")] == [
        [r[k] for k in keys] for r in rows(tmp_path / "straight")
    ]
    assert _same_policy(tmp_path / "killed", tmp_path / "straight")
