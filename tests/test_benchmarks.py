"""The benchmarks' own logic: `meta-rl bench` forwarding, summary arithmetic, usage errors.

Only what can be checked without timing anything (speed is measured by the benchmarks, never
in tests).
"""

from __future__ import annotations

import pytest
import torch


def test_meta_rl_bench_forwards_to_the_benchmarks(capsys):
    from meta_rl.cli import main

    assert main(["bench", "iteration", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: meta-rl bench iteration")  # the benchmarks' parser, named
    assert "--variants" in out
    assert main(["bench", "nonsense"]) == 2


def test_learning_benchmark_late_summary_arithmetic():
    from benchmarks.learning import late_summary

    def curve(*posts: float) -> list[tuple[float, float]]:
        return [(0.0, post) for post in posts]  # (pre, post) per iteration; pre is unused

    curves = {
        "exact": {1: curve(-50, -20, -10), 2: curve(-50, -30, -20)},
        "fast": {1: curve(-50, -25, -15), 2: curve(-50, -25, -25)},
    }
    exact, fast = late_summary(curves, window=2)
    assert exact["mean"] == pytest.approx(-20.0)  # seeds: -15 and -25
    assert exact["seed_std"] == pytest.approx(50**0.5)
    assert fast["mean"] == pytest.approx(-22.5) and fast["diff"] == pytest.approx(-2.5)
    assert fast["per_seed"] == "-20.0 -25.0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without GPU")
def test_bench_iteration_on_cuda_without_a_gpu_is_a_one_line_error():
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit, match="--devices cuda, but torch sees no CUDA device"):
        main(["iteration", "--devices", "cuda"])


def test_bench_iteration_columns_are_the_phases_the_learner_reports():
    """A renamed phase would leave a column at zero: every phase the table shows is reported."""
    from benchmarks.iteration import PHASES, run_iterations

    spec = {
        "device": "cpu",
        "family": "nav",
        "net": "port",
        "tasks": 2,
        "episodes": 2,
        "horizon": 5,
        "overrides": ["train.sampler=vector"],
        "malloc": False,
        "iterations": 1,
        "threads": 1,
        "algo": "maml_trpo",
    }
    threads = torch.get_num_threads()
    try:
        result = run_iterations(spec)
    finally:
        torch.set_num_threads(threads)  # the benchmark sets it for its own process
    assert all(result[phase] > 0.0 for phase in PHASES), {p: result[p] for p in PHASES}
    assert sum(result[phase] for phase in PHASES) <= result["total"]


def test_ray_cluster_model_arithmetic():
    """The model's phase: dispatch scaled by actors, shipping over the link beyond one node,
    the slowest shard's steps; actors capped at one per task; the learner bound when the
    sampling phases take less than it."""
    import argparse

    from benchmarks.ray_sampler import model

    args = argparse.Namespace(
        tasks=8, episodes=10, horizon=100, workers=2, cores_per_node=2, gbit=8.0
    )
    measured = {
        "dispatch_s": 0.002,
        "broadcast_s": 0.01,
        "return_s": 0.02,
        "return_bytes": 1e9,
        "broadcast_bytes": 0.0,
        "step_s": 1e-4,
        "env_step_s": 1e-5,
    }
    one, two, four = model(measured, learner_s=1.0, args=args, nodes=[1, 2, 4])
    assert one["actors"] == 2 and two["actors"] == 4 and four["actors"] == 8
    # 1 node: 2 actors, 40 envs each; no link crossed
    assert one["phase_s"] == pytest.approx(0.002 + 0.03 + 100 * (1e-4 + 40 * 1e-5))
    # 2 nodes: 4 actors, 20 envs each; 1 GB over 8 Gbit/s is 1 s
    assert two["phase_s"] == pytest.approx(0.004 + 0.03 + 1.0 + 100 * (1e-4 + 20 * 1e-5))
    assert one["iteration_s"] == pytest.approx(1.0 + 2 * one["phase_s"])
    assert [r["bottleneck"] for r in (one, two)] == ["learner", "sampling"]
    assert one["500 it (h)"] == pytest.approx(500 * one["iteration_s"] / 3600)
