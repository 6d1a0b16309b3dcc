"""``benchmarks ceiling``: raw ``env.step`` throughput, one process and one per core.

The ceiling any sampler is measured against: precomputed random actions, no policy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import FAMILIES, load, table, write


def _raw_steps(env_id: str, num_envs: int, steps: int, seed: int) -> tuple[int, float]:
    """Step ``num_envs`` envs with precomputed random actions; (steps done, seconds)."""
    import gymnasium as gym
    import numpy as np

    import meta_rl.envs  # noqa: F401

    sub = [gym.make(env_id) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    for i, env in enumerate(sub):
        env.action_space.seed(seed + i)
        env.reset(seed=seed + i)
    actions = [[env.action_space.sample() for env in sub] for _ in range(64)]
    return step_loop(sub, actions, steps, rng)


def step_loop(
    envs: Sequence[Any], actions: Sequence[Any], steps: int, rng: Any
) -> tuple[int, float]:
    """Step ``envs`` ``steps`` times in all with rows of ``actions`` drawn by ``rng``, resetting
    an env whose episode ended; (steps done, seconds)."""
    done, t = 0, time.perf_counter()
    while done < steps:
        for env, action in zip(envs, actions[int(rng.integers(len(actions)))], strict=True):
            _, _, term, trunc, _ = env.step(action)
            if term or trunc:
                env.reset()
            done += 1
    return done, time.perf_counter() - t


RawSteps = Callable[[str, int, int, int], tuple[int, float]]


def ceiling(
    env_id: str, num_envs: int, steps: int, processes: int, raw_steps: RawSteps = _raw_steps
) -> float:
    """Raw env-step throughput (steps/s) of ``processes`` forked processes together.

    Each process times its own stepping loop (env construction and the pool excluded); the
    total is all steps over the slowest process's time. ``raw_steps(env_id, num_envs, steps,
    seed)`` builds and times one process's envs (a module-level function: the pool pickles it).
    """
    if processes == 1:
        done, seconds = raw_steps(env_id, num_envs, steps, 0)
        return done / seconds
    import multiprocessing as mp

    jobs = [(env_id, num_envs, steps, i) for i in range(processes)]
    with mp.get_context("fork").Pool(processes) as pool:
        results = pool.starmap(raw_steps, jobs)
    return sum(r[0] for r in results) / max(r[1] for r in results)


def run(args: argparse.Namespace) -> None:
    from meta_rl.perf import cpu_count

    cores = cpu_count()
    rows = []
    for family in args.families:
        steps = args.steps if family != "cheetah" and family != "ant" else args.steps // 5
        one = ceiling(FAMILIES[family], args.envs, steps, 1)
        many = ceiling(FAMILIES[family], args.envs, steps, cores)
        rows.append(
            {
                "family": family,
                "1 proc steps/s": one,
                f"{cores} procs steps/s": many,
                "ratio": many / one,
                "load": load(),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])))
    write(args.out, "ceiling", {"rows": rows, "cores": cores})


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("ceiling", help="raw env.step throughput, 1 process and 1 per core")
    c.add_argument(
        "--families", nargs="+", default=["nav", "bandit", "mdp", "cheetah"], choices=FAMILIES
    )
    c.add_argument("--envs", type=int, default=20)
    c.add_argument("--steps", type=int, default=40_000)
    c.set_defaults(fn=run)
