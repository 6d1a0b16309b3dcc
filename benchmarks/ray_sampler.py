"""``benchmarks ray``: the Ray sampler against the process sampler, and a model of a cluster.

In one run, on one meta-batch (default HalfCheetahVel 40 x 20 x 100, the reference port's):

1. Sampling throughput of ``ray`` and ``process`` with the same number of workers (best of
   ``--repeats`` phases each) and the ratio.
2. Seconds per MAML-TRPO iteration with each (``benchmarks iteration``'s child, a fresh
   process per sampler), which also gives the learner's share: everything but sampling.
3. The Ray sampler's costs: per phase fixed (a call's dispatch, the shards' parameters and
   seeds shipped, the episode arrays returned, each timed on its own with payloads of a real
   phase's size) and per step (the slope of phase time against the horizon, for two shard
   sizes: a step's fixed part, the policy's call, and its part per env).
4. A model from those figures: iteration time and env steps/s for 1, 2, 4, ..., 64 worker
   nodes of ``--cores-per-node`` cores (one actor per core), the learner on one node, the
   episode arrays crossing a network of ``--gbit`` Gbit/s. Written as a Markdown table and a
   PNG beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    add_batch_arguments,
    batch_config,
    jsonable,
    load,
    table,
    write,
)
from benchmarks.iteration import run_in_child
from meta_rl.tables import format_table

PHASES_PER_ITERATION = 2  # MAML-TRPO with one inner step: pre- and post-adaptation batches


def _best_phase(sampler: Any, policy: Any, params: Any, tasks: Any, repeats: int) -> float:
    sampler.sample(policy, params, tasks)  # warm-up: the first policy send, first touches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sampler.sample(policy, params, tasks)
        times.append(time.perf_counter() - t)
    return min(times)


def _policy_and_params(sampler: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    from benchmarks.common import NETS
    from meta_rl.agents.policies import make_policy
    from meta_rl.functional import expand_to_tasks, policy_params

    hidden, act = NETS[args.net]
    policy = make_policy(sampler.observation_space, sampler.action_space, hidden, act)
    params = {k: v.detach() for k, v in policy_params(policy).items()}
    return policy, expand_to_tasks(params, args.tasks)


def throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Env steps/s of one sampling phase, process then ray, the same workers and batch."""
    import torch

    from meta_rl.builders import build_sampler
    from meta_rl.samplers.ray_sampler import connect

    rows = []
    for backend in ("process", "ray"):
        if backend == "ray":  # one Ray for this and ``costs``; not running beside ``process``
            connect(None, args.workers)
        config = batch_config(
            args, [f"train.sampler={backend}", f"train.num_workers={args.workers}"]
        )
        sampler = build_sampler(config, torch.device("cpu"))
        policy, params = _policy_and_params(sampler, args)
        tasks = sampler.sample_tasks()
        steps = sampler.sample(policy, params, tasks).num_steps
        best = _best_phase(sampler, policy, params, tasks, args.repeats)
        sampler.close()
        rows.append({"sampler": backend, "phase_s": best, "steps/s": steps / best, "load": load()})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    rows[1]["of_process"] = rows[1]["steps/s"] / rows[0]["steps/s"]
    return rows


def iterations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seconds per MAML-TRPO iteration with each sampler, each in a fresh process."""
    rows = []
    for backend in ("process", "ray"):
        spec = {
            "device": "cpu",
            "family": args.family,
            "net": args.net,
            "tasks": args.tasks,
            "episodes": args.episodes,
            "horizon": args.horizon,
            "overrides": [f"train.sampler={backend}", f"train.num_workers={args.workers}"],
            "malloc": True,
            "iterations": args.iterations,
            "threads": None,
            "algo": "maml_trpo",
        }
        before = load()
        result = run_in_child(spec)
        rows.append(
            {
                "sampler": backend,
                "iteration_s": result["total"],
                "sampling_s": result["sampling"],
                "learner_s": result["total"] - result["sampling"],
                "post": result["post"],
                "load": 0.5 * (before + load()),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def _round_trips(sampler: Any, params: Any, repeats: int) -> dict[str, float]:
    """Seconds of a call's dispatch, of shipping a phase's shards to the actors and of
    returning a phase's episode arrays, each on its own (best of ``repeats``), all shards at
    once as in a phase; with payloads of the sampler's real sizes."""
    import ray

    from meta_rl.samplers.shards import split_phase

    @ray.remote(num_cpus=0)
    class Probe:
        def noop(self) -> None:
            return None

        def take(self, phase: Any) -> None:
            return None

        def give(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return arrays

    workers = len(sampler.shards)
    probes = [Probe.remote() for _ in range(workers)]
    ray.get([p.noop.remote() for p in probes])
    host = {k: v.numpy() for k, v in params.items()}
    seeds, torch_seed = np.zeros(sampler.batch_size, np.int64), 0
    tasks = sampler.sample_tasks()
    phases = split_phase(host, tasks, seeds, torch_seed, sampler.shards, sampler.episodes_per_task)
    arrays = sampler.empty_arrays()
    share = {k: np.ascontiguousarray(v[:, : v.shape[1] // workers]) for k, v in arrays.items()}
    shares = [ray.put(share) for _ in probes]  # made on the actor's side in a real phase

    def best(call: Any) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            ray.get(call())
            times.append(time.perf_counter() - t)
        return min(times)

    noop = best(lambda: [p.noop.remote() for p in probes])
    take = best(lambda: [p.take.remote(ph) for p, ph in zip(probes, phases, strict=True)])
    give = best(lambda: [p.give.remote(s) for p, s in zip(probes, shares, strict=True)])
    for probe in probes:
        ray.kill(probe)
    return {
        "dispatch_s": noop,
        "broadcast_s": max(take - noop, 0.0),
        "return_s": max(give - noop, 0.0),
        "return_bytes": float(sum(a.nbytes for a in arrays.values())),
        "broadcast_bytes": float(sum(v.nbytes for v in host.values())),
    }


def costs(args: argparse.Namespace) -> dict[str, float]:
    """Per-phase fixed and per-step costs of the Ray sampler on this machine."""
    import torch

    from meta_rl.builders import build_sampler

    horizons = (1, args.horizon // 2, args.horizon)
    fits = {}
    for episodes in (max(args.episodes // 4, 1), args.episodes):  # two shard sizes
        times = []
        for horizon in horizons:
            batch = argparse.Namespace(**{**vars(args), "horizon": horizon, "episodes": episodes})
            config = batch_config(batch, ["train.sampler=ray", f"train.num_workers={args.workers}"])
            sampler = build_sampler(config, torch.device("cpu"))
            policy, params = _policy_and_params(sampler, args)
            times.append(_best_phase(sampler, policy, params, sampler.sample_tasks(), 2))
            if episodes == args.episodes and horizon == args.horizon:
                trips = _round_trips(sampler, params, args.repeats + 2)
            sampler.close()
        slope, intercept = np.polyfit(horizons, times, 1)
        envs = args.tasks * episodes / args.workers  # per actor
        fits[envs] = (float(slope), float(intercept))
        print(f"{envs:.0f} envs per actor: phase = {intercept:.4f} s + {slope * 1e3:.3f} ms/step")
    (n_small, (s_small, _)), (n_big, (s_big, fixed)) = sorted(fits.items())
    per_env = (s_big - s_small) / (n_big - n_small)
    return {
        **trips,
        "fixed_s": fixed,
        "step_s": s_big - per_env * n_big,  # a step's own cost: the policy call, the loop
        "env_step_s": per_env,  # and per env of the shard
        "load": load(),
    }


def model(
    measured: dict[str, float],
    learner_s: float,
    args: argparse.Namespace,
    nodes: list[int],
) -> list[dict[str, Any]]:
    """Predicted seconds per iteration and env steps/s per cluster size.

    A phase on ``w`` actors: dispatch (measured, scaled by ``w`` over the measured actors),
    the parameters out and the episodes back over the learner node's link (bytes / bandwidth,
    plus the measured local cost), then the slowest actor's steps: ``horizon`` times (a step's
    own cost + envs per actor times the per-env cost). Actors are capped at one per task (a
    shard is a run of tasks).
    """
    batch = args.tasks * args.episodes
    link = args.gbit * 1e9 / 8
    rows = []
    for n in nodes:
        actors = min(n * args.cores_per_node, args.tasks)
        envs = int(np.ceil(args.tasks / actors)) * args.episodes
        dispatch = measured["dispatch_s"] * actors / args.workers
        transfer = (measured["return_bytes"] + measured["broadcast_bytes"]) / link if n > 1 else 0
        ship = measured["broadcast_s"] + measured["return_s"] + transfer
        # a step's own cost is not negative: a fit below zero means it is lost in the noise
        own = max(measured["step_s"], 0.0)
        steps = args.horizon * (own + envs * measured["env_step_s"])
        phase = dispatch + ship + steps
        iteration = learner_s + PHASES_PER_ITERATION * phase
        rows.append(
            {
                "nodes": n,
                "actors": actors,
                "phase_s": phase,
                "iteration_s": iteration,
                "sampling_share": PHASES_PER_ITERATION * phase / iteration,
                "sampling steps/s": batch * args.horizon / phase,
                "run steps/s": PHASES_PER_ITERATION * batch * args.horizon / iteration,
                "500 it (h)": 500 * iteration / 3600,
                "bottleneck": "learner" if learner_s > PHASES_PER_ITERATION * phase else "sampling",
            }
        )
    return rows


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    return format_table(columns, [[r.get(c, "") for c in columns] for r in rows], markdown=True)


def plot(rows: list[dict[str, Any]], learner_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r["nodes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(nodes, [r["iteration_s"] for r in rows], "o-", label="iteration (model)")
    left.axhline(learner_s, color="gray", ls="--", label="learner alone (measured)")
    left.set(xscale="log", yscale="log", xlabel="worker nodes", ylabel="seconds per iteration")
    left.legend()
    right.plot(nodes, [r["run steps/s"] for r in rows], "o-", label="whole run")
    right.plot(nodes, [r["sampling steps/s"] for r in rows], "s--", label="while sampling")
    right.set(xscale="log", yscale="log", xlabel="worker nodes", ylabel="env steps/s")
    right.legend()
    for axis in (left, right):
        axis.set_xticks(nodes, [str(n) for n in nodes])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    from meta_rl.perf import configure_learner

    configure_learner()
    if args.from_json is not None:  # the model and the report again, from a saved run
        saved = json.loads(args.from_json.read_text())
        speed, its, measured = saved["throughput"], saved["iterations"], saved["costs"]
    else:
        import ray

        speed = throughput(args)
        measured = costs(args)
        ray.shutdown()  # the iteration children start their own
        its = iterations(args)
    learner_s = min(r["learner_s"] for r in its)  # the same learner code: the quieter run
    nodes = [2**i for i in range(7)]
    rows = model(measured, learner_s, args, nodes)
    title = f"{args.family} {args.net} {args.tasks}x{args.episodes}x{args.horizon}"
    print(f"\nsampling, {args.workers} workers each ({title}, best of {args.repeats}):")
    print(table(speed, ["sampler", "phase_s", "steps/s", "of_process", "load"]))
    print(f"\nMAML-TRPO seconds per iteration (mean of {args.iterations} after 1 warm-up):")
    print(table(its, list(its[0])))
    print("\nRay sampler costs on this machine (seconds; bytes per phase):")
    print(table([measured], list(measured)))
    print(
        f"\nmodel: {args.cores_per_node} cores per worker node, learner {learner_s:.2f} s "
        f"(measured), {args.gbit:g} Gbit/s to the learner node"
    )
    print(table(rows, list(rows[0])))
    bound = [r["nodes"] for r in rows if r["bottleneck"] == "learner"]
    print(
        f"the learner is the bottleneck from {bound[0]} worker nodes on"
        if bound
        else "sampling stays the bottleneck up to the largest cluster modelled"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "ray_scaling.png"
    plot(rows, learner_s, png)
    print(f"-> {png}")
    report = args.out / "ray_scaling.md"
    report.write_text(
        "\n\n".join(
            [
                f"Sampling, {args.workers} workers each ({title}, best of {args.repeats}):",
                _markdown(speed, ["sampler", "phase_s", "steps/s", "of_process", "load"]),
                f"MAML-TRPO seconds per iteration (mean of {args.iterations} after 1 warm-up):",
                _markdown(its, list(its[0])),
                "Ray sampler costs on this machine (seconds; bytes per phase):",
                _markdown([measured], list(measured)),
                f"Model: {args.cores_per_node} cores per worker node, learner {learner_s:.2f} s "
                f"(measured), {args.gbit:g} Gbit/s to the learner node:",
                _markdown(rows, list(rows[0])),
            ]
        )
        + "\n"
    )
    print(f"-> {report}")
    payload = {"throughput": speed, "iterations": its, "costs": measured, "model": rows}
    write(args.out, f"ray_{args.family}_{args.net}", {**payload, "args": jsonable(args)})


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("ray", help="ray sampler vs process sampler, and a cluster model")
    add_batch_arguments(r)
    r.set_defaults(family="cheetah", tasks=40, episodes=20, horizon=100)
    r.add_argument("--workers", type=int, default=2, help="workers of both samplers")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--iterations", type=int, default=2)
    r.add_argument("--cores-per-node", type=int, default=2)
    r.add_argument("--gbit", type=float, default=10.0, help="assumed link to the learner node")
    r.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="rebuild the model and report from this run's JSON instead of measuring",
    )
    r.set_defaults(fn=run)
