from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from meta_rl import logger as logger_module
from meta_rl.logger import MetricLogger

CONFIG = {
    "env": {"id": "MetaRL/Navigation2D-v0", "kwargs": {}, "max_episode_steps": None},
    "policy": {"hidden_sizes": [100, 100], "activation": "relu", "init_std": 1.0},
    "algo": {"name": "maml_trpo", "inner_lr": 0.1, "first_order": False},
    "train": {"meta_batch_size": 20, "seed": 1},
}


def events(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)]


def read_csv(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (run_dir / "progress.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def clock(monkeypatch):
    """A fake wall clock for the logger: `clock[0]` is the current monotonic time."""
    now = [1000.0]
    monkeypatch.setattr(logger_module.time, "monotonic", lambda: now[0])
    return now


def test_scalars_go_to_tensorboard_on_both_axes(tmp_path, clock):
    with MetricLogger(tmp_path, CONFIG) as log:
        log.record("return/pre_adapt", -30.0)
        log.record("return/post_adapt", torch.tensor(-12.5))
        log.record("trpo/kl", np.float32(0.0078125))
        log.dump(iteration=0, env_steps=4000)
        log.record("return/pre_adapt", -20.0)
        log.record("return/post_adapt", -8.0)
        log.dump(iteration=1, env_steps=8000)

    acc = events(tmp_path)
    assert scalars(acc, "return/pre_adapt") == [(0, -30.0), (1, -20.0)]
    assert scalars(acc, "return/post_adapt") == [(0, -12.5), (1, -8.0)]
    assert scalars(acc, "trpo/kl") == [(0, 0.0078125)]
    by_steps = events(tmp_path / "env_steps")
    assert scalars(by_steps, "env_steps/return/pre_adapt") == [(4000, -30.0), (8000, -20.0)]
    assert scalars(by_steps, "env_steps/trpo/kl") == [(4000, 0.0078125)]


def test_csv_columns_fixed_at_first_dump(tmp_path, clock):
    with MetricLogger(tmp_path, CONFIG) as log:
        log.record("return/post_adapt", -10.0)
        log.record("trpo/kl", 0.01)
        log.record("loss/surrogate", 0.5)
        clock[0] += 2.5
        log.dump(0, 100)
        log.record("return/pre_adapt", -40.0)
        log.record("return/post_adapt", -9.0)
        log.record("late/new_metric", 7.0)  # unknown at the first dump: TensorBoard only
        log.dump(1, 200, time_s=99.0)

    columns, rows = read_csv(tmp_path)
    assert columns == [
        "iteration",
        "env_steps",
        "time_s",
        "return_pre_adapt",
        "return_post_adapt",
        "loss_surrogate",
        "trpo_kl",
    ]
    assert rows[0] == {
        "iteration": "0",
        "env_steps": "100",
        "time_s": "2.5",
        "return_pre_adapt": "",  # required column, not recorded this iteration
        "return_post_adapt": "-10.0",
        "loss_surrogate": "0.5",
        "trpo_kl": "0.01",
    }
    assert rows[1]["time_s"] == "99.0"  # time passed in wins over the measured one
    assert (rows[1]["return_pre_adapt"], rows[1]["trpo_kl"]) == ("-40.0", "")
    assert scalars(events(tmp_path), "late/new_metric") == [(1, 7.0)]


def test_config_is_logged_once_as_text_and_hparams(tmp_path, clock):
    with MetricLogger(tmp_path, CONFIG):
        pass
    acc = events(tmp_path)
    [text_event] = acc.Tensors("config/text_summary")
    text = text_event.tensor_proto.string_val[0].decode()
    assert yaml.safe_load("\n".join(line[4:] for line in text.splitlines())) == CONFIG

    content = acc.PluginTagToContent("hparams")
    ssi = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert ssi.hparams["algo.inner_lr"].number_value == pytest.approx(0.1)
    assert ssi.hparams["policy.hidden_sizes"].string_value == "[100, 100]"
    assert ssi.hparams["algo.first_order"].bool_value is False
    assert ssi.hparams["env.max_episode_steps"].string_value == "None"
    assert ssi.hparams["env.kwargs"].string_value == "{}"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {"return/pre_adapt", "return/post_adapt"}


def test_resume_appends_csv_purges_stale_rows_and_continues_the_clock(tmp_path, clock):
    log = MetricLogger(tmp_path, CONFIG)
    checkpointed = None
    for it in range(4):  # the process dies after dumping 3, but the checkpoint is from 1
        clock[0] += 10.0
        log.record("return/pre_adapt", float(it))
        log.record("extra/x", 1.0)
        log.dump(it, 1000 * (it + 1))
        if it == 1:
            checkpointed = log.state_dict()
    log.close()
    assert checkpointed == {"iteration": 1, "env_steps": 2000, "time_s": 20.0}

    clock[0] = 5.0  # a new process: the monotonic clock restarted
    # TensorBoard orders event files by the whole second in their names (then pid and a
    # per-process counter compared as text): a real resume starts later than the crashed run.
    time.sleep(1.05)
    with MetricLogger(tmp_path, CONFIG, resume_state=checkpointed) as log:
        clock[0] += 3.0
        log.record("return/pre_adapt", 20.0)
        log.record("brand/new", 1.0)  # not a column of the existing CSV
        log.dump(2, 3000)
        assert log.state_dict() == {"iteration": 2, "env_steps": 3000, "time_s": 23.0}

    columns, rows = read_csv(tmp_path)
    assert columns == [
        "iteration",
        "env_steps",
        "time_s",
        "return_pre_adapt",
        "return_post_adapt",
        "extra_x",
    ]
    assert [(r["iteration"], r["time_s"], r["return_pre_adapt"]) for r in rows] == [
        ("0", "10.0", "0.0"),
        ("1", "20.0", "1.0"),
        ("2", "23.0", "20.0"),
    ]
    acc = events(tmp_path)
    assert scalars(acc, "return/pre_adapt") == [(0, 0.0), (1, 1.0), (2, 20.0)]
    assert len(acc.Tensors("config/text_summary")) == 1
    by_steps = events(tmp_path / "env_steps")
    assert scalars(by_steps, "env_steps/return/pre_adapt") == [
        (1000, 0.0),
        (2000, 1.0),
        (3000, 20.0),
    ]


def test_fresh_logger_starts_a_new_csv(tmp_path, clock):
    (tmp_path / "progress.csv").write_text("iteration,old\n5,1\n")
    with MetricLogger(tmp_path, CONFIG) as log:
        log.dump(0, 10)
    columns, rows = read_csv(tmp_path)
    assert columns[:5] == [
        "iteration",
        "env_steps",
        "time_s",
        "return_pre_adapt",
        "return_post_adapt",
    ]
    assert [r["iteration"] for r in rows] == ["0"]


@pytest.mark.parametrize("bad", ["1.0", True, None, [1.0], torch.ones(2)])
def test_record_rejects_non_scalars(tmp_path, clock, bad):
    with (
        MetricLogger(tmp_path, CONFIG) as log,
        pytest.raises(TypeError),
    ):
        log.record("x/y", bad)


def test_declared_keys_get_columns_from_the_first_row_and_pending_is_read_only(tmp_path):
    with MetricLogger(tmp_path, CONFIG) as logger:
        logger.declare(["eval/return_step_0"])
        logger.record("return/pre_adapt", 1.0)
        assert dict(logger.pending) == {"return/pre_adapt": 1.0}
        with pytest.raises(TypeError):
            logger.pending["x"] = 2.0  # type: ignore[index]
        logger.dump(0, 10)
        assert dict(logger.pending) == {}
        logger.record("eval/return_step_0", -3.5)
        logger.record("late/key", 1.0)  # neither recorded nor declared before the header
        logger.dump(1, 20)
    columns, rows = read_csv(tmp_path)
    assert "eval_return_step_0" in columns and "late_key" not in columns
    assert [r["eval_return_step_0"] for r in rows] == ["", "-3.5"]
