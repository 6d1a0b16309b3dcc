"""ProcessSampler: same episodes as VectorSampler, workers that survive and never outlive us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from meta_rl.agents.policies import make_policy
from meta_rl.algorithms import closed_form
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers.process import ProcessSampler, SamplerWorkerError

NAV = "MetaRL/Navigation2D-v0"


def _per_task_params(policy, num_tasks, seed):
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + 0.05 * torch.randn((num_tasks, *v.shape), generator=gen)
        for k, v in policy_params(policy).items()
    }


@pytest.mark.parametrize(
    ("env_id", "num_tasks", "workers"),
    [
        (NAV, 5, 2),
        (NAV, 4, 4),
        ("MetaRL/Bandit-K5-v0", 3, 3),
        # 17-dim observations: a step's rows start at other alignments (MKL rounds by them)
        ("MetaRL/HalfCheetahVel-v0", 3, 2),
    ],
)
@pytest.mark.parametrize(
    "task_forward", [None, closed_form.task_forward], ids=["generic", "closed"]
)
def test_same_seeds_give_the_same_episodes_as_the_in_process_sampler(
    env_id, num_tasks, workers, task_forward
):
    """Bitwise, also with one task per worker, for Gaussian and categorical policies (whose
    rebuilt distributions keep their normalised logits)."""
    kwargs = {"num_tasks": num_tasks, "episodes_per_task": 3, "seed": 11, "max_episode_steps": 7}
    if task_forward is not None:
        kwargs["task_forward"] = task_forward  # what builders hand every sampler
    vector = VectorSampler(env_id, **kwargs)
    with ProcessSampler(env_id, num_workers=workers, **kwargs) as parallel:
        assert len(parallel.shards) == workers
        policy = make_policy(vector.observation_space, vector.action_space, (16,), "tanh")
        policy.reset_parameters(torch.Generator().manual_seed(0))
        for phase in range(3):  # workers survive across phases; the policy is sent once
            tasks = vector.sample_tasks()
            assert parallel.sample_tasks() == tasks
            params = _per_task_params(policy, num_tasks, phase)
            a, b = vector.sample(policy, params, tasks), parallel.sample(policy, params, tasks)
            assert a.tensors().keys() == b.tensors().keys()
            for name, x in a.tensors().items():
                y = getattr(b, name)
                assert torch.equal(x, y), name
        pids = parallel.worker_pids
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize(
    "task_forward", [None, closed_form.task_forward], ids=["generic", "closed"]
)
def test_shards_get_the_bits_of_one_process_where_kernels_round_by_position(task_forward):
    """A Meta-World-like shape (tanh, 100 units, 10 episodes per task, 2 shards of 5 tasks):
    a shard's tensors end where the whole batch's do not, so CPU kernels whose scalar tail
    rounds unlike their vectorised body (the inference tanh's ``exp``, the log-probability's
    ``log``) would give shard rows other last bits unless the worker keeps the whole batch's
    layout (``WholeBatch``)."""
    kwargs = {"num_tasks": 10, "episodes_per_task": 10, "seed": 4, "max_episode_steps": 20}
    if task_forward is not None:
        kwargs["task_forward"] = task_forward
    vector = VectorSampler(NAV, **kwargs)
    with ProcessSampler(NAV, num_workers=2, **kwargs) as parallel:
        policy = make_policy(vector.observation_space, vector.action_space, (100, 100), "tanh")
        policy.reset_parameters(torch.Generator().manual_seed(0))
        for per_task in (False, True):
            params = (
                _per_task_params(policy, 10, 0)
                if per_task
                else expand_to_tasks(policy_params(policy), 10)
            )
            tasks = vector.sample_tasks()
            assert parallel.sample_tasks() == tasks
            a, b = vector.sample(policy, params, tasks), parallel.sample(policy, params, tasks)
            for name, x in a.tensors().items():
                assert torch.equal(x, getattr(b, name)), (name, per_task)


def test_a_dead_worker_is_a_clear_error_and_stops_the_others():
    sampler = ProcessSampler(NAV, 2, 2, seed=0, num_workers=2, max_episode_steps=4)
    policy = make_policy(sampler.observation_space, sampler.action_space, (4,), "tanh")
    params = _per_task_params(policy, 2, 0)
    tasks = sampler.sample_tasks()
    sampler.sample(policy, params, tasks)
    os.kill(sampler.worker_pids[0], signal.SIGKILL)
    with pytest.raises(SamplerWorkerError, match=r"worker 0 \(pid \d+\) died with exit code -9"):
        sampler.sample(policy, params, tasks)
    assert not any(_alive(pid) for pid in sampler.worker_pids)
    with pytest.raises(SamplerWorkerError, match="closed"):
        sampler.sample(policy, params, tasks)


def test_an_exception_in_a_worker_carries_its_traceback():
    with ProcessSampler(NAV, 2, 1, seed=0, num_workers=2, max_episode_steps=4) as sampler:
        policy = make_policy(sampler.observation_space, sampler.action_space, (4,), "tanh")
        tasks = [{"goal": [0.1, 0.1]}, {"goal": [7.0, 0.0]}]  # outside the task space
        with pytest.raises(SamplerWorkerError, match=r"(?s)worker 1 raised.*ValueError.*outside"):
            sampler.sample(policy, _per_task_params(policy, 2, 0), tasks)


_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from meta_rl.agents.policies import make_policy
    from meta_rl.functional import expand_to_tasks, policy_params
    from meta_rl.samplers.process import ProcessSampler

    sampler = ProcessSampler("MetaRL/Navigation2D-v0", 2, 2, seed=0, max_episode_steps=3,
                             num_workers=2)
    policy = make_policy(sampler.observation_space, sampler.action_space, (4,), "tanh")
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 2)
    sampler.sample(policy, params, sampler.sample_tasks())
    print(*sampler.worker_pids, flush=True)
    mode = sys.argv[1]
    if mode == "exception":
        raise RuntimeError("boom")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # "interrupt": the test sends SIGINT to the whole process group
    """
)


def _alive(pid: int) -> bool:
    """Running (zombies waiting for a reaper count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode", ["exception", "interrupt", "kill"])
def test_no_orphan_workers_when_the_parent_ends(mode, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    parent = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal would make it
    )
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    if mode == "interrupt":
        os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C: parent and workers get SIGINT
    code = parent.wait(timeout=30)
    assert code == {"exception": 1, "interrupt": -signal.SIGINT, "kill": -signal.SIGKILL}[mode]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
