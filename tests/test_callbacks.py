"""Training callbacks: held-out evaluation during training, early stopping, stop and resume."""

from __future__ import annotations

import csv
import types
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from meta_rl.callbacks import Callback, EarlyStopping, HeldOutEvaluation, TrainingState
from meta_rl.checkpoint import find_latest, load_checkpoint
from meta_rl.config import ConfigError, load_config
from meta_rl.evaluation import EvalSettings, evaluate_run
from meta_rl.trainer import train

CI_CONFIG = Path(__file__).parents[1] / "experiments" / "configs" / "maml_navigation2d_ci.yaml"
SMALL = [  # a tiny batch: these tests are about the loop, not about learning
    "train.meta_batch_size=4",
    "train.episodes_per_task=4",
    "env.max_episode_steps=20",
    "policy.hidden_sizes=[16]",
]


def small_config(*overrides: str):
    return load_config(CI_CONFIG, [*SMALL, *overrides])


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def final_policy(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(find_latest(run_dir))["trainer"]["policy"]


@pytest.fixture(scope="module")
def with_and_without_eval(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    plain = train(small_config(), run_dir=root / "plain")
    evaluated = train(
        small_config("train.eval_every=2", "train.eval_tasks=3", "train.eval_episodes=2"),
        run_dir=root / "evaluated",
    )
    return plain, evaluated


def test_evaluation_during_training_leaves_training_bitwise_unchanged(with_and_without_eval):
    plain, evaluated = with_and_without_eval
    a, b = final_policy(plain), final_policy(evaluated)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    keys = ("env_steps", "return_pre_adapt", "return_post_adapt", "trpo_kl")
    assert [[r[k] for k in keys] for r in rows(plain)] == [
        [r[k] for k in keys] for r in rows(evaluated)
    ]


def test_evaluation_is_logged_under_eval_in_csv_and_tensorboard(with_and_without_eval):
    _, evaluated = with_and_without_eval
    progress = rows(evaluated)
    # every 2 iterations of 4: after iterations 1 and 3; the columns exist from the first row
    filled = [r["iteration"] for r in progress if r["eval_return_step_1"]]
    assert filled == ["1", "3"]
    assert {"eval_return_step_0", "eval_ci95_step_0", "eval_ci95_step_1"} <= set(progress[0])
    assert all(float(r["eval_ci95_step_0"]) > 0 for r in progress if r["eval_ci95_step_0"])
    events = EventAccumulator(str(evaluated))
    events.Reload()
    scalars = events.Scalars("eval/return_step_1")
    assert [e.step for e in scalars] == [1, 3]
    assert [e.value for e in scalars] == pytest.approx(
        [float(r["eval_return_step_1"]) for r in progress if r["eval_return_step_1"]], rel=1e-6
    )


def test_evaluation_during_training_matches_meta_rl_evaluate(with_and_without_eval, tmp_path):
    """Same held-out tasks, stream and protocol: the last row equals an evaluation afterwards."""
    _, evaluated = with_and_without_eval
    settings = EvalSettings(tasks=3, steps=1, episodes=2)  # the fixture's eval_* settings
    [curve] = evaluate_run(evaluated, settings, out_dir=tmp_path / "eval")
    last = rows(evaluated)[-1]
    assert last["iteration"] == "3"  # evaluated after the last update: the final checkpoint
    logged = [float(last[f"eval_{kind}_step_{k}"]) for k in (0, 1) for kind in ("return", "ci95")]
    assert logged == [x for pair in curve.mean_ci() for x in pair]


class StopAt(Callback):
    """Stops after a fixed iteration and counts how often each hook ran."""

    def __init__(self, iteration: int) -> None:
        self.iteration, self.seen, self.started, self.ended = iteration, [], 0, 0

    def on_training_start(self, state: TrainingState) -> None:
        self.started += 1

    def on_iteration_end(self, state: TrainingState) -> bool:
        assert (
            state.report is not None
            and state.metrics["return/post_adapt"] == (state.report.returns[-1])
        )
        self.seen.append(state.iteration)
        return state.iteration < self.iteration

    def on_training_end(self, state: TrainingState) -> None:
        self.ended += 1


def test_a_callback_returning_false_stops_after_that_iterations_checkpoint(tmp_path):
    stopper, calls = StopAt(1), []
    run_dir = train(
        small_config(),
        run_dir=tmp_path / "run",
        callbacks=[stopper, lambda state: calls.append(state.iteration)],
    )
    assert stopper.seen == [0, 1] and (stopper.started, stopper.ended) == (1, 1)
    assert calls == [0, 1]  # a plain function is a callback too
    assert [r["iteration"] for r in rows(run_dir)] == ["0", "1"]
    assert load_checkpoint(find_latest(run_dir))["iteration"] == 1


def test_stopping_early_and_resuming_is_bitwise_the_straight_run(tmp_path):
    config = small_config()
    straight = train(config, run_dir=tmp_path / "straight")
    stopped = train(config, run_dir=tmp_path / "stopped", callbacks=[StopAt(1)])
    train(config, resume=stopped)
    a, b = final_policy(straight), final_policy(stopped)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_early_stopping_counts_values_without_a_new_best():
    logger = types.SimpleNamespace(pending={})
    state = TrainingState(trainer=None, logger=logger, run_dir=Path())  # type: ignore[arg-type]
    stop = EarlyStopping("eval/r", patience=2, min_delta=0.5)
    verdicts = []
    for value in [1.0, None, 2.0, 2.4, None, 3.0, 3.1, 3.5]:
        logger.pending = {} if value is None else {"eval/r": value}
        verdicts.append(stop.on_iteration_end(state))
    # 1 best; skip; 2 best; 2.4 not by > 0.5 (1); skip; 3 best; 3.1 (1); 3.5 (2) -> stop
    assert verdicts == [True, True, True, True, True, True, True, False]
    assert stop.state_dict() == {"best": 3.0, "since_best": 2}
    lower = EarlyStopping("loss", patience=1, mode="min")
    logger.pending = {"loss": 1.0}
    assert lower.on_iteration_end(state)
    logger.pending = {"loss": 1.5}
    assert lower.on_iteration_end(state) is False


def test_eval_patience_stops_training_and_its_count_survives_resume(tmp_path):
    """patience 1 with a trust region no step fits in: no evaluation can beat the first."""
    frozen = ["algo.max_kl=1e-30", "train.eval_every=1", "train.eval_patience=1"]
    config = small_config(*frozen, "train.eval_tasks=2", "train.eval_episodes=1")
    run_dir = train(config, run_dir=tmp_path / "run")
    progress = rows(run_dir)
    # the line search rejects every step, so returns stay the same: iteration 1 is not better
    assert [r["iteration"] for r in progress] == ["0", "1"]
    assert progress[0]["eval_return_step_1"] == progress[1]["eval_return_step_1"]
    state = load_checkpoint(find_latest(run_dir))["callbacks"]
    assert state["1:EarlyStopping"]["since_best"] == 1
    train(config, resume=run_dir)  # resumed with its count: the next evaluation stops it again
    assert [r["iteration"] for r in rows(run_dir)] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.eval_every=-1", "train.eval_every: must be >= 0, got -1"),
        ("train.eval_tasks=1", "train.eval_tasks: must be >= 2, got 1"),
        ("train.eval_patience=2", "train.eval_patience: needs train.eval_every >= 1"),
    ],
)
def test_bad_eval_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CI_CONFIG, [override])


def test_held_out_evaluation_refuses_settings_without_an_interval():
    with pytest.raises(ValueError, match="tasks >= 2"):
        HeldOutEvaluation(every=1, tasks=1)
    assert HeldOutEvaluation(every=1, steps=2).keys() == [
        "eval/return_step_0",
        "eval/ci95_step_0",
        "eval/return_step_1",
        "eval/ci95_step_1",
        "eval/return_step_2",
        "eval/ci95_step_2",
    ]


def test_a_callback_that_is_not_callable_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="callbacks: expected a Callback or a callable, got int"):
        train(small_config(), run_dir=tmp_path / "run", callbacks=[3])  # type: ignore[list-item]
    assert not (tmp_path / "run").exists()
