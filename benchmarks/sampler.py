"""``benchmarks sampler``: meta-batch sampling throughput per backend, against the ceiling."""

from __future__ import annotations

import argparse
import time

from benchmarks.ceiling import ceiling
from benchmarks.common import (
    FAMILIES,
    NETS,
    add_batch_arguments,
    batch_config,
    jsonable,
    load,
    table,
    write,
)


def run(args: argparse.Namespace) -> None:
    import torch

    from meta_rl.agents.policies import make_policy
    from meta_rl.builders import build_sampler
    from meta_rl.functional import expand_to_tasks, policy_params
    from meta_rl.perf import configure_learner, cpu_count

    configure_learner()
    family, (hidden, act) = FAMILIES[args.family], NETS[args.net]
    cores = cpu_count()
    batch = args.tasks * args.episodes
    # Ceilings with as many live envs per process as the samplers hold: hundreds of envs'
    # physics state no longer fits in the CPU caches, which slows env.step itself and is not
    # sampler overhead. The 20-env ceilings show that cost.
    same = {1: ceiling(family, batch, 40 * batch, 1)}
    same[cores] = ceiling(family, batch // cores, 40 * batch // cores, cores)
    few = {n: ceiling(family, 20, 20_000 if args.family != "cheetah" else 8_000, n) for n in same}
    rows = []
    for backend in args.backends:
        config = batch_config(args, [f"train.sampler={backend}"])
        try:
            sampler = build_sampler(config, torch.device("cpu"))
        except ValueError as exc:
            print(f"{backend}: skipped ({exc})")
            continue
        policy = make_policy(sampler.observation_space, sampler.action_space, hidden, act)
        params = expand_to_tasks(
            {k: v.detach() for k, v in policy_params(policy).items()}, args.tasks
        )
        tasks = sampler.sample_tasks()
        sampler.sample(policy, params, tasks)  # warm-up (worker start, first policy send)
        times, steps = [], 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            episodes = sampler.sample(policy, params, tasks)
            times.append(time.perf_counter() - t)
            steps = episodes.num_steps
        sampler.close()
        best = min(times)
        procs = cores if backend == "process" else 1
        rows.append(
            {
                "backend": backend,
                "batch_s": best,
                "steps/s": steps / best,
                "ceiling": f"{procs} proc",
                "of_ceiling": steps / best / same[procs],
                "of_20_env_ceiling": steps / best / few[procs],
                "load": load(),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    for n in same:
        print(
            f"ceiling, {n} proc: {same[n]:.0f} steps/s with {batch // n} envs each, "
            f"{few[n]:.0f} with 20"
        )
    print(table(rows, list(rows[0])))
    write(
        args.out,
        f"sampler_{args.family}_{args.net}",
        {"rows": rows, "ceiling_same_envs": same, "ceiling_20_envs": few, "args": jsonable(args)},
    )


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sampler", help="meta-batch sampling throughput per backend")
    add_batch_arguments(s)
    s.add_argument("--backends", nargs="+", default=["vector", "process", "torch"])
    s.add_argument("--repeats", type=int, default=3)
    s.set_defaults(fn=run)
