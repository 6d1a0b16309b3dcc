"""``benchmarks metaworld``: the samplers on Meta-World against Meta-World's own step.

The floor is Meta-World itself: its env objects stepped with precomputed random actions and
reset at the horizon, as a sampler does, with no policy and no wrapper. A sampler's rate is
divided by that single-env rate times its processes (the issue's target: >= 90 %), and by the
rate of as many envs per process as the sampler holds, stepped for one episode each (reset
included) in that many forked processes at once: what the cores give together right now,
neighbours included, for that much live physics state. ``--raw-envs K ...`` also steps the
same number of steps on K envs per process, for each K: how much the envs' number costs by
itself (``benchmarks/RESULTS.md``).
``--profile`` prints where one in-process sampling call spends its time.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.ceiling import ceiling, step_loop
from benchmarks.common import jsonable, load, table, write

FAMILIES = {"ml1-reach": "MetaRL/MetaWorld-ML1-reach-v3-v0", "ml10": "MetaRL/MetaWorld-ML10-v0"}


def _raw_steps(env_id: str, num_envs: int, steps: int, seed: int) -> tuple[int, float]:
    """Step ``num_envs`` of Meta-World's own envs (tasks drawn as a sampler's); (steps, s)."""
    import gymnasium as gym
    import numpy as np

    import meta_rl.envs  # noqa: F401

    rng = np.random.default_rng(seed)
    families = [gym.make(env_id) for _ in range(num_envs)]
    for env, task in zip(families, families[0].unwrapped.sample_tasks(num_envs, rng), strict=True):
        env.reset(options={"task": task})  # binds the Meta-World env of the task's class
    sims = [env.unwrapped._sim for env in families]
    actions = rng.uniform(-1, 1, size=(64, num_envs, 4)).astype(np.float32)
    return step_loop(sims, actions, steps, rng)


def _sampler(env_id: str, args: argparse.Namespace, backend: str):
    import torch

    from meta_rl.builders import build_sampler
    from meta_rl.config import config_from_dict

    data = {
        "env": {"id": env_id, "max_episode_steps": args.horizon},
        "policy": {"hidden_sizes": [128, 128], "activation": "tanh"},  # the configs' policy
        "train": {"meta_batch_size": args.tasks, "episodes_per_task": args.episodes, "seed": 1},
    }
    overrides = [f"train.sampler={backend}", f"train.num_workers={args.workers}"]
    return build_sampler(config_from_dict(data, overrides), torch.device("cpu"))


def _policy_and_params(sampler, tasks: int):
    from meta_rl.agents.policies import make_policy
    from meta_rl.functional import expand_to_tasks, policy_params

    policy = make_policy(sampler.observation_space, sampler.action_space, [128, 128], "tanh")
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, tasks)
    return policy, params


def _timed_calls(sampler):
    """A function timing one sampling call (after a warm-up: workers start, policy sent, models
    built): (seconds, env steps)."""
    policy, params = _policy_and_params(sampler, sampler.num_tasks)
    tasks = sampler.sample_tasks()
    sampler.sample(policy, params, tasks)

    def once() -> tuple[float, int]:
        t = time.perf_counter()
        steps = sampler.sample(policy, params, tasks).num_steps
        return time.perf_counter() - t, steps

    return once


def _profile(env_id: str, args: argparse.Namespace) -> None:
    """Top functions (own time) of one in-process sampling call."""
    import cProfile
    import pstats

    sampler = _sampler(env_id, args, "vector")
    policy, params = _policy_and_params(sampler, sampler.num_tasks)
    tasks = sampler.sample_tasks()
    sampler.sample(policy, params, tasks)
    profiler = cProfile.Profile()
    profiler.runcall(sampler.sample, policy, params, tasks)
    sampler.close()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def run(args: argparse.Namespace) -> None:
    """Per backend and round: Meta-World's raw rates, then one sampling call right after, so
    each ratio compares two measurements that saw the same neighbours."""
    from meta_rl.perf import configure_learner, cpu_count

    configure_learner(1)  # train.num_threads' default: threads spin against the workers
    args.workers = args.workers or cpu_count()
    env_id = FAMILIES[args.family]
    rows = []
    for backend in args.backends:
        procs = args.workers if backend == "process" else 1
        per_process = args.tasks * args.episodes // procs
        sampler = _sampler(env_id, args, backend)
        try:
            once = _timed_calls(sampler)
            for round_ in range(args.repeats):
                single = ceiling(env_id, 1, args.raw_steps, 1, _raw_steps)
                # one full episode per env, its reset included: what one sampling call does
                episode = per_process * sampler.horizon
                raw = ceiling(env_id, per_process, episode, procs, _raw_steps)
                # the same steps on fewer live envs per process: what their number costs
                fewer = {
                    f"raw_{procs}x{k}env": ceiling(env_id, k, episode, procs, _raw_steps)
                    for k in args.raw_envs
                }
                seconds, steps = once()
                rate = steps / seconds
                rows.append(
                    {
                        "backend": backend,
                        "round": round_,
                        "procs": procs,
                        "raw_1env": single,
                        **fewer,
                        f"raw_{procs}x{per_process}env": raw,
                        "sampler": rate,
                        "of_1env_x_procs": rate / (single * procs),
                        "of_raw_same_envs": rate / raw,
                        "load": load(),
                    }
                )
                print(table(rows[-1:], list(rows[-1])), flush=True)
        finally:
            sampler.close()
    print(f"{env_id}: {args.tasks} tasks x {args.episodes} episodes, steps/s")
    for backend in args.backends:
        mine = [r for r in rows if r["backend"] == backend]
        print(table(mine, list(mine[0])))
    write(args.out, f"metaworld_{args.family}", {"rows": rows, "args": jsonable(args)})
    if args.profile:
        _profile(env_id, args)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("metaworld", help="samplers on Meta-World against its own env step")
    s.add_argument("--family", default="ml1-reach", choices=FAMILIES)
    s.add_argument("--tasks", type=int, default=20)
    s.add_argument("--episodes", type=int, default=10)
    s.add_argument("--horizon", type=int, default=None, help="default: the family's 500")
    s.add_argument("--workers", type=int, default=None, help="default: one per core")
    s.add_argument("--backends", nargs="+", default=["process", "vector"])
    s.add_argument("--repeats", type=int, default=2, help="rounds of raw, then sampler")
    s.add_argument("--raw-steps", type=int, default=20_000, help="steps of the 1-env raw loop")
    s.add_argument(
        "--raw-envs",
        type=int,
        nargs="+",
        default=[],
        help="also step the processes' steps raw on K envs per process, for each K",
    )
    s.add_argument("--profile", action="store_true", help="cProfile one vector sampling call")
    s.set_defaults(fn=run)
