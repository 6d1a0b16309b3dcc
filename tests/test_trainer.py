"""End to end: MAML-TRPO learns at CI scale, logs its tags, and resumes bit for bit."""

from __future__ import annotations

import csv
import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from meta_rl.checkpoint import find_latest, load_checkpoint
from meta_rl.config import ConfigError, load_config
from meta_rl.trainer import train

CI_CONFIG = Path(__file__).parents[1] / "experiments" / "configs" / "maml_navigation2d_ci.yaml"


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def with_iterations(config, iterations: int):
    return replace(config, train=replace(config.train, iterations=iterations))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    config = with_iterations(load_config(CI_CONFIG), 6)
    return train(config, run_dir=tmp_path_factory.mktemp("run"))


def test_maml_trpo_learns_navigation_at_ci_scale(trained):
    progress = rows(trained)
    assert [int(r["iteration"]) for r in progress] == list(range(6))
    first, last = progress[0], progress[-1]
    pre, post = float(last["return_pre_adapt"]), float(last["return_post_adapt"])
    # fixed seed: adaptation helps clearly, and meta-training improved on iteration 0
    assert post > pre + 3.0, (pre, post)
    assert post > float(first["return_post_adapt"]) + 20.0
    steps = [int(r["env_steps"]) for r in progress]
    assert all(b > a for a, b in itertools.pairwise(steps))
    times = [float(r["time_s"]) for r in progress]
    assert all(b > a > 0 for a, b in itertools.pairwise(times))


def test_tensorboard_has_the_documented_tags(trained):
    events = EventAccumulator(str(trained))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "return/pre_adapt",
        "return/post_adapt",
        "meta/surrogate_before",
        "meta/surrogate_after",
        "trpo/kl",
        "trpo/line_search_steps",
        "trpo/cg_residual",
        "meta/grad_norm",
        "baseline/explained_variance",
        "time/sampling_s",
        "time/optimize_s",
        "perf/env_steps_per_s",
    }
    assert expected <= tags, expected - tags
    post = [e.value for e in events.Scalars("return/post_adapt")]
    csv_post = [float(r["return_post_adapt"]) for r in rows(trained)]
    assert post == pytest.approx(csv_post, rel=1e-6)
    assert [e.step for e in events.Scalars("trpo/kl")] == list(range(6))
    assert all(0.0 <= e.value <= 0.01 for e in events.Scalars("trpo/kl"))
    assert "config/text_summary" in events.Tags()["tensors"]


def test_checkpoints_are_weights_only_and_resume_is_bitwise(tmp_path):
    config = load_config(CI_CONFIG)
    straight = train(with_iterations(config, 4), run_dir=tmp_path / "straight")
    split = train(with_iterations(config, 2), run_dir=tmp_path / "split")
    train(with_iterations(config, 4), resume=split)

    a = load_checkpoint(find_latest(straight))
    b = load_checkpoint(find_latest(split))
    assert a["iteration"] == b["iteration"] == 3
    assert a["env_steps"] == b["env_steps"]
    for name, value in a["trainer"]["policy"].items():
        assert torch.equal(value, b["trainer"]["policy"][name]), name
    keys = ("iteration", "env_steps", "return_pre_adapt", "return_post_adapt", "trpo_kl")
    assert [[r[k] for k in keys] for r in rows(straight)] == [
        [r[k] for k in keys] for r in rows(split)
    ]
    assert (straight / "config.yaml").is_file()
    assert (straight / "checkpoints" / "iter_000002.pt").is_file()  # checkpoint_every: 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error_before_anything_is_written(tmp_path):
    config = load_config(CI_CONFIG, ["train.device=cuda"])
    with pytest.raises(ConfigError, match=r"train\.device: 'cuda' requested"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_from_python_leaves_the_process_settings_alone(tmp_path, monkeypatch):
    """No torch thread count or malloc tuning as a side effect (the CLI opts in, not train())."""
    from meta_rl import perf

    def refuse(*args, **kwargs):
        raise AssertionError("train() must not configure the process")

    monkeypatch.setattr(perf, "configure_learner", refuse)
    monkeypatch.setattr(perf, "tune_malloc", refuse)
    before = torch.get_num_threads()
    overrides = ["train.meta_batch_size=2", "train.episodes_per_task=2", "train.iterations=1"]
    config = load_config(CI_CONFIG, [*overrides, f"train.num_threads={before + 1}"])
    train(config, run_dir=tmp_path / "run")
    assert torch.get_num_threads() == before
