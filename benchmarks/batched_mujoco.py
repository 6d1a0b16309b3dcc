"""``python -m benchmarks mujoco``: env steps/s of the batched MuJoCo backend vs Gymnasium.

Both backends are driven through the same ``EnvBatch`` interface the samplers use (reset every
sub-env with a task and a seed, step the live ones with precomputed random actions until every
episode has ended, reset again), so the only difference is how a step is computed: Gymnasium's
``env.step`` per sub-env (``GymEnvs``) or ``MuJoCoBatch`` (the same MuJoCo C calls per sub-env,
everything else for the batch in numpy). Each configuration is measured in one process and in
one forked process per core (each with its share of the sub-envs); in a process the batch
runs with one thread and with one thread per core. Ratios are against Gymnasium in the same
run, the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from collections.abc import Sequence
from typing import Any

FAMILIES = {"cheetah": "MetaRL/HalfCheetahVel-v0", "ant": "MetaRL/AntVel-v0"}
HORIZON = 100


def drive(backend: str, env_id: str, num_envs: int, steps: int, seed: int, threads: int) -> Any:
    """Steps done and seconds spent by one process stepping ``num_envs`` sub-envs."""
    import gymnasium as gym
    import numpy as np

    from meta_rl.samplers.mujoco import make_env_batch

    batch = make_env_batch(
        backend, env_id, num_envs, {"max_episode_steps": HORIZON}, threads=threads
    )
    probe = gym.make(env_id)
    rng = np.random.default_rng(seed)
    tasks = probe.unwrapped.sample_tasks(num_envs, rng)
    nu = probe.action_space.shape[0]
    actions = rng.uniform(-1, 1, (64, num_envs, nu)).astype(np.float32)
    done, t = 0, time.perf_counter()
    while done < steps:
        batch.reset(tasks, rng.integers(2**31, size=num_envs).tolist())
        active = np.ones(num_envs, dtype=bool)
        while active.any() and done < steps:
            rows = np.flatnonzero(active)
            _, _, terminated, truncated, _ = batch.step(rows, actions[done % 64][rows])
            active[rows] = ~(terminated | truncated)
            done += len(rows)
    seconds = time.perf_counter() - t
    batch.close()
    return done, seconds


def _drive_star(args: tuple) -> Any:
    return drive(*args)


def throughput(
    backend: str, env_id: str, num_envs: int, steps: int, processes: int, threads: int
) -> float:
    """Steps/s of ``processes`` processes together: all steps over the slowest one's time."""
    if processes == 1:
        done, seconds = drive(backend, env_id, num_envs, steps, 0, threads)
        return done / seconds
    share = (backend, env_id, num_envs // processes, steps // processes)
    jobs = [(*share, seed, threads) for seed in range(processes)]
    with mp.get_context("fork").Pool(processes) as pool:
        results = pool.map(_drive_star, jobs)
    return sum(r[0] for r in results) / max(r[1] for r in results)


@contextlib.contextmanager
def _timed_calls(patches: Sequence[tuple[Any, str, str]], totals: dict[str, float]):
    """Within the block, each ``(owner, name, key)``: ``owner.name``'s wall time adds up in
    ``totals[key]``; the originals are put back afterwards."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]

    def timed(original: Any, key: str) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - t

        return wrapper

    try:
        for (owner, name, original), (_, _, key) in zip(originals, patches, strict=True):
            setattr(owner, name, timed(original, key))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def sampling_split(env_id: str, tasks: int, episodes: int, repeats: int) -> dict[str, float]:
    """Where one in-process ``MuJoCoSampler.sample`` spends its time (port network, seconds),
    with the physics on one thread so that the parts add up to the wall time.

    ``mj_step``: MuJoCo's step (``frame_skip`` substeps); ``post_constraint``:
    ``mj_rnePostConstraint``, which only the Ant's contact cost needs; ``physics_copies``: the
    rest of ``MuJoCoBatch._physics`` (per-sub-env state copies); ``batch_numpy``: the rest of
    ``MuJoCoBatch.step`` (observations, rewards, flags) and the resets;
    ``policy_and_rollout``: everything else (policy, action draws, episode arrays).
    """
    import mujoco

    from benchmarks.common import NETS
    from meta_rl.agents.policies import make_policy
    from meta_rl.functional import expand_to_tasks, policy_params
    from meta_rl.samplers import MuJoCoSampler

    sampler = MuJoCoSampler(env_id, tasks, episodes, seed=1, max_episode_steps=HORIZON, threads=1)
    hidden, act = NETS["port"]
    policy = make_policy(sampler.observation_space, sampler.action_space, hidden, act)
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, tasks)
    task_list = sampler.sample_tasks()
    totals: dict[str, float] = {}
    patches = [
        (sampler.envs, "_physics", "physics"),
        (sampler.envs, "step", "step"),
        (sampler.envs, "reset", "reset"),
        (mujoco, "mj_step", "mj_step"),
        (mujoco, "mj_rnePostConstraint", "post_constraint"),
    ]
    best: dict[str, float] = {}
    with _timed_calls(patches, totals):
        sampler.sample(policy, params, task_list)  # warm-up
        for _ in range(repeats):
            totals.clear()
            t = time.perf_counter()
            sampler.sample(policy, params, task_list)
            total = time.perf_counter() - t
            step, post = totals["mj_step"], totals.get("post_constraint", 0.0)
            split = {
                "total": total,
                "mj_step": step,
                "post_constraint": post,
                "physics_copies": totals["physics"] - step - post,
                "batch_numpy": totals["step"] - totals["physics"] + totals["reset"],
                "policy_and_rollout": total - totals["step"] - totals["reset"],
            }
            if not best or total < best["total"]:
                best = split
    sampler.close()
    return best


def cmd_mujoco(args: argparse.Namespace) -> None:
    from benchmarks.common import load, table, write
    from meta_rl.perf import cpu_count

    cores = cpu_count()
    rows = []
    for family in args.families:
        env_id = FAMILIES[family]
        steps = args.steps if family == "cheetah" else args.steps // 5
        for processes in sorted({1, cores}):
            gym_rate = throughput("gym", env_id, args.envs, steps, processes, 1)
            configs = [(1, "batch 1 thread")]
            if processes == 1 and cores > 1:
                configs.append((cores, f"batch {cores} threads"))
            for threads, label in configs:
                rate = throughput("mujoco", env_id, args.envs, steps, processes, threads)
                rows.append(
                    {
                        "family": family,
                        "procs": processes,
                        "backend": label,
                        "gym steps/s": gym_rate,
                        "batch steps/s": rate,
                        "ratio": rate / gym_rate,
                        "load": load(),
                    }
                )
                print(table(rows[-1:], list(rows[-1])), flush=True)
    print(f"\nenv steps/s, {args.envs} sub-envs in all, horizon {HORIZON}, {cores} cores")
    print(table(rows, list(rows[0])))
    splits = {}
    for family in args.families:
        split = splits[family] = sampling_split(FAMILIES[family], 40, 20, repeats=3)
        shares = {k: f"{v:.3f} s ({v / split['total']:.0%})" for k, v in split.items()}
        print(f"\nin-process mujoco sampler, 1 thread, {family} 40 x 20 x {HORIZON}, best of 3:")
        print("  ".join(f"{k} {v}" for k, v in shares.items()), f" load {load():.2f}")
    settings = {k: str(v) for k, v in vars(args).items() if k != "fn"}
    payload = {"rows": rows, "splits": splits, "cores": cores, "args": settings}
    write(args.out, "mujoco_steps", payload)


def register(sub: Any) -> None:
    p = sub.add_parser("mujoco", help="env steps/s: batched MuJoCo backend vs Gymnasium")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--envs", type=int, default=800, help="sub-envs in all (split over processes)")
    p.add_argument("--steps", type=int, default=160_000, help="cheetah steps (ant: a fifth)")
    p.set_defaults(fn=cmd_mujoco)
