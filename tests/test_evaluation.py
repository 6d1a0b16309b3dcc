"""Meta-test evaluation: held-out seeds, step-size schedule, curves and their CIs, outputs, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import meta_rl.evaluation as evaluation
from meta_rl.adaptation import InnerBatch, adapt, detached
from meta_rl.builders import build_policy
from meta_rl.checkpoint import save_checkpoint
from meta_rl.cli import main
from meta_rl.config import config_from_dict, save_config
from meta_rl.evaluation import (
    AdaptationCurve,
    EvalSettings,
    adaptation_curve,
    evaluate_run,
    held_out_generators,
    held_out_tasks,
    load_results,
    step_sizes,
)
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler

NAV = "MetaRL/Navigation2D-v0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def nav_config(horizon: int = 8, seed: int = 3):
    return config_from_dict(
        {
            "env": {"id": NAV, "max_episode_steps": horizon},
            "policy": {"hidden_sizes": [8]},
            "train": {"seed": seed, "meta_batch_size": 2, "episodes_per_task": 2},
        }
    )


def write_skipped_run(run_dir: Path, config) -> Path:
    """A run dir whose 'meta-training' was skipped: the checkpoint holds the seeded init."""
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    sampler = VectorSampler(config.env.id, 1, 1, seed=0, max_episode_steps=8)
    policy = build_policy(config, sampler, config.train.seed)
    sampler.close()
    save_checkpoint(
        run_dir / "checkpoints" / "latest.pt", {"trainer": {"policy": policy.state_dict()}}
    )
    return run_dir


@pytest.fixture
def skipped_run(tmp_path) -> Path:
    return write_skipped_run(tmp_path / "run", nav_config())


# --------------------------------------------------------------------------------- held-out


def test_held_out_tasks_come_from_a_stream_training_never_draws():
    seed = 5
    train_sampler = VectorSampler(NAV, 4, 1, seed=seed)
    eval_sampler = VectorSampler(NAV, 4, 1, seed=0)
    training = [tuple(t["goal"]) for _ in range(50) for t in train_sampler.sample_tasks()]
    held_out = [tuple(t["goal"]) for t in held_out_tasks(eval_sampler, 40, seed)]
    assert not set(training) & set(held_out)
    # the training generator is default_rng(seed); the held-out ones are different states
    train_state = np.random.default_rng(seed).bit_generator.state["state"]
    for rng in held_out_generators(seed):
        assert rng.bit_generator.state["state"] != train_state
    # the task and sampler streams are distinct, reproducible, and depend on the seed
    tasks_rng, sampler_rng = held_out_generators(seed)
    assert tasks_rng.random() != sampler_rng.random()
    assert held_out_tasks(eval_sampler, 40, seed) == held_out_tasks(eval_sampler, 40, seed)
    assert held_out_tasks(eval_sampler, 40, seed) != held_out_tasks(eval_sampler, 40, seed + 1)
    spawned = np.random.SeedSequence(seed).spawn(8)  # what a spawning trainer would use
    assert all(s.spawn_key != evaluation.held_out_seed_sequence(seed).spawn_key for s in spawned)
    train_sampler.close()
    eval_sampler.close()


# ------------------------------------------------------------------------------ step sizes


@pytest.mark.parametrize(
    ("alpha", "steps", "factor", "expected"),
    [
        (0.1, 3, 0.5, [0.1, 0.05, 0.05]),
        (0.1, 1, 0.5, [0.1]),
        (0.1, 0, 0.5, []),
        (0.2, 3, 1.0, [0.2, 0.2, 0.2]),
    ],
)
def test_step_size_schedule(alpha, steps, factor, expected):
    assert step_sizes(alpha, steps, factor) == pytest.approx(expected, abs=0, rel=1e-15)


def test_negative_steps_rejected():
    with pytest.raises(ValueError):
        step_sizes(0.1, -1)


# ---------------------------------------------------------------------------------- curves


def test_curve_has_k_plus_one_points_and_uses_the_schedule(monkeypatch):
    config = nav_config()
    sampler = VectorSampler(NAV, 3, 2, seed=0, max_episode_steps=8)
    policy = build_policy(config, sampler, seed=1)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    tasks = held_out_tasks(sampler, 3, seed=2)
    state = held_out_generators(2)[1].bit_generator.state
    estimator = evaluation.advantage_estimator(config)
    used: list[float] = []

    def recording_adapt(*args, **kwargs):
        used.append(args[3])
        return adapt(*args, **kwargs)

    monkeypatch.setattr(evaluation, "adapt", recording_adapt)
    sizes = step_sizes(0.3, 3)
    curve = adaptation_curve("m", policy, sampler, tasks, sizes, estimator, state)
    assert used == [0.3, 0.15, 0.15]
    assert len(curve.task_returns) == 4 and all(len(r) == 3 for r in curve.task_returns)
    assert curve.env_steps == 4 * 3 * 2 * 8  # Navigation2D episodes rarely end early at 8 steps
    for k, v in policy.state_dict().items():  # the module itself is never changed
        assert torch.equal(v, before[k])

    # the same protocol written out by hand gives the same numbers
    sampler.set_rng_state(state)
    params = detached(expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 3))
    manual = []
    for k in range(4):
        episodes = sampler.sample(policy, params, tasks)
        manual.append(episodes.episode_returns().mean(dim=1).double().tolist())
        if k < 3:
            adv, _ = estimator(episodes)
            params = detached(adapt(policy, params, InnerBatch(episodes, adv), sizes[k]))
    assert curve.task_returns == manual
    mean, half = curve.mean_ci()[1]
    assert mean == pytest.approx(float(np.mean(manual[1])), rel=1e-12)
    t_975_df2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # closed form for 2 degrees of freedom
    expected_half = t_975_df2 * float(np.std(manual[1], ddof=1)) / math.sqrt(3)
    assert half == pytest.approx(expected_half, rel=1e-9)
    sampler.close()


def test_curve_round_trips_through_json():
    curve = AdaptationCurve("x", [0.1], [[1.0, 2.0], [3.0, 5.0]], 10, 1.5, {"a": 1})
    back = AdaptationCurve.from_dict(json.loads(json.dumps(curve.to_dict())))
    assert back == curve


# ------------------------------------------------------------------ a run with training skipped


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return path.read_bytes()[:8] == PNG_MAGIC and image.format == "PNG"


def test_evaluate_skipped_run_writes_curve_plot_and_tensorboard(skipped_run):
    settings = EvalSettings(tasks=3, steps=2, episodes=2, baselines=("random",))
    curves = evaluate_run(skipped_run, settings)
    out = skipped_run / "eval"
    run_curve, random_curve = curves
    assert run_curve.method == "maml_trpo" and random_curve.method == "random"
    # random init with the run's seed IS the skipped run: same tasks, stream -> same numbers
    assert run_curve.task_returns == random_curve.task_returns
    assert run_curve.step_sizes == [0.1, 0.05]

    with (out / "adaptation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], int(r["step"])) for r in rows] == [
        (m, k) for m in ("maml_trpo", "random") for k in range(3)
    ]
    for row, (mean, half) in zip(rows, run_curve.mean_ci() * 2, strict=True):
        assert float(row["mean_return"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["ci95_high"]) - float(row["ci95_low"]) == pytest.approx(2 * half)
    assert [float(r["step_size"]) for r in rows[:3]] == [0.0, 0.1, 0.05]

    meta, loaded = load_results(skipped_run)
    assert meta["seed"] == 3 and len(meta["tasks"]) == 3
    assert loaded[0].task_returns == run_curve.task_returns
    assert _is_png(out / "adaptation.png")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    scalars = events.Scalars("eval/maml_trpo/return")
    assert [s.step for s in scalars] == [0, 1, 2]
    assert [s.value for s in scalars] == pytest.approx([m for m, _ in run_curve.mean_ci()])


def test_cli_evaluate_and_plot(skipped_run, tmp_path, capsys):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    args = ["evaluate", str(skipped_run), "--tasks", "2", "--episodes", "1", "--threads", "1"]
    assert main([*args, "--steps", "1", "--out", str(out_a)]) == 0
    assert main([*args, "--steps", "2", "--step-size", "0.2", "--out", str(out_b)]) == 0
    assert "step 2" in capsys.readouterr().out
    _, (curve_b,) = load_results(out_b)
    assert curve_b.step_sizes == [0.2, 0.1]
    png = tmp_path / "both.png"
    assert main(["plot", str(out_a), str(out_b / "adaptation.json"), "--out", str(png)]) == 0
    assert _is_png(png)


@pytest.mark.parametrize(
    "extra",
    [["--tasks", "1"], ["--episodes", "0"], ["--steps", "-1"], ["--step-size", "0"]],
)
def test_cli_evaluate_rejects_bad_arguments(skipped_run, extra):
    assert main(["evaluate", str(skipped_run), *extra]) == 2


def test_cli_errors_on_missing_inputs(tmp_path):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2


def test_reptile_run_also_gets_a_curve_with_its_own_inner_loop(tmp_path):
    """The PG-step protocol is the paper's; a Reptile run is also measured as it adapts."""
    config = config_from_dict(
        {
            "env": {"id": NAV, "max_episode_steps": 8},
            "policy": {"hidden_sizes": [8]},
            "algo": {"name": "reptile", "num_inner_steps": 2, "inner_optimizer": "adam"},
            "train": {"seed": 3, "meta_batch_size": 2, "episodes_per_task": 2},
        }
    )
    run_dir = write_skipped_run(tmp_path / "reptile", config)
    curves = evaluate_run(run_dir, EvalSettings(tasks=3, steps=1, episodes=2))
    pg, own = curves
    assert own.method == "reptile (own inner loop)"
    assert len(pg.task_returns) == 2  # 0..K plain policy-gradient steps
    assert len(own.task_returns) == 3  # before each of Reptile's 2 updates, then after
    assert own.step_sizes == [config.algo.inner_lr] * 2
    # both start from the same policy on the same tasks and sampler stream
    assert own.task_returns[0] == pg.task_returns[0]
    assert own.task_returns[1] != pg.task_returns[1]  # Adam steps, not vanilla PG steps
    assert own.env_steps == 3 * 3 * 2 * 8


def test_clip_actions_of_the_evaluation_overrides_the_runs_own(tmp_path):
    """--clip-actions scores a run trained on raw samples as one trained with clipping is
    scored: the same numbers as evaluating it under train.clip_actions true."""
    raw = config_from_dict(  # a family whose reward charges the action: clipping shows
        {
            "env": {"id": "MetaRL/HalfCheetahVel-v0", "max_episode_steps": 5},
            "policy": {"hidden_sizes": [8]},
            "train": {"meta_batch_size": 2, "episodes_per_task": 2, "clip_actions": False},
        }
    )
    clipped = dataclasses.replace(raw, train=dataclasses.replace(raw.train, clip_actions=True))
    runs = {
        name: write_skipped_run(tmp_path / name, c) for name, c in (("raw", raw), ("clip", clipped))
    }
    settings = EvalSettings(tasks=2, steps=1, episodes=2)

    def returns(run, **kw):
        (curve,) = evaluate_run(
            runs[run], dataclasses.replace(settings, **kw), out_dir=tmp_path / "o"
        )
        return curve.task_returns

    assert returns("raw", clip_actions=True) == returns("clip")
    assert returns("clip", clip_actions=False) == returns("raw")
    assert returns("raw") != returns("clip")
    assert main(["evaluate", str(runs["raw"]), "--tasks", "2", "--clip-actions", "on"]) == 0
