"""The reproduction script runs end to end at the tiny budget; its table holds measured numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from meta_rl.evaluation import load_results, trained_env_steps

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    """Import experiments/reproduce.py (not a package) under its own module name."""
    if "experiments_reproduce" in sys.modules:
        return sys.modules["experiments_reproduce"]
    spec = importlib.util.spec_from_file_location(
        "experiments_reproduce", ROOT / "experiments" / "reproduce.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments_reproduce"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    }


def test_reproduce_navigation_tiny_end_to_end_and_rerun_reuses(tmp_path):
    script = load_script()
    args = [
        "--benchmark",
        "navigation2d",
        "--budget",
        "tiny",
        "--work-dir",
        str(tmp_path / "work"),
        "--results-dir",
        str(tmp_path / "results"),
        "--skip",
        "reptile",
    ]
    assert script.main(args) == 0
    results = tmp_path / "results"
    markdown = (results / "navigation2d_tiny.md").read_text()
    rows = table_rows(markdown)
    assert list(rows) == ["maml_trpo", "random", "pretrained", "oracle"]

    # every table cell is the evaluation's own number (CSV and the run's adaptation.json)
    with (results / "navigation2d_tiny.csv").open() as f:
        measured = {(r["method"], int(r["step"])): r for r in csv.DictReader(f)}
    _, curves = load_results(tmp_path / "work" / "navigation2d_tiny" / "maml_trpo")
    assert [c.method for c in curves] == list(rows)
    for curve in curves:
        for step, (mean, half) in enumerate(curve.mean_ci()):
            cell = rows[curve.method][step]
            assert re.match(rf"{mean:.1f} ± {half:.1f}( \(paper .*\))?$", cell), cell
            assert float(measured[(curve.method, step)]["mean_return"]) == round(mean, 3)
    assert "paper ≈ -10 to -20" in rows["maml_trpo"][1]
    assert "1 meta-iteration(s)" in markdown and "; trained." in markdown
    for png in ("navigation2d_tiny.png", "navigation2d_tiny_learning.png"):
        with Image.open(results / png) as image:
            assert image.format == "PNG"

    # the baselines got the meta-learner's env steps (the oracle as its cap), by default
    baselines = tmp_path / "work" / "navigation2d_tiny" / "baselines"
    maml_steps = trained_env_steps(tmp_path / "work" / "navigation2d_tiny" / "maml_trpo")
    assert f"{maml_steps / 1e3:.1f} k" in rows["pretrained"][4]
    specs = {p.name.split("-")[0]: json.loads(p.read_text()) for p in baselines.glob("*.json")}
    assert set(specs) == {"pretrained", "oracle"}
    for meta in specs.values():
        assert meta["spec"]["total_timesteps"] == maml_steps
        # both record a learning curve (the oracle also decides with it when to stop)
        assert len(meta["info"]["curve_scores"]) == len(meta["info"]["curve_env_steps"]) > 0
    assert (
        specs["oracle"]["spec"]["stop_when_flat"]
        and not specs["pretrained"]["spec"]["stop_when_flat"]
    )
    stamps = {p: p.stat().st_mtime_ns for p in baselines.iterdir()}

    # a second invocation reuses the run and the cached baselines, and measures the same
    assert script.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in baselines.iterdir()} == stamps  # cache hits
    again = (results / "navigation2d_tiny.md").read_text()
    assert "reused (trained by an earlier invocation)" in again
    assert {k: v[:4] for k, v in table_rows(again).items()} == {k: v[:4] for k, v in rows.items()}


def test_budgets_name_existing_configs_and_small_is_the_default():
    script = load_script()
    args = script.parse_args(["--benchmark", "halfcheetah_dir"])
    assert args.budget == "small" and args.threads == 1
    for benchmark in script.BENCHMARKS.values():
        assert {"small", "paper", "tiny"} <= set(benchmark.budgets)
        for budget in benchmark.budgets.values():
            assert script._config_path("maml", benchmark, budget).is_file()
    with pytest.raises(SystemExit, match="navigation2d has budgets paper, quick, small, tiny"):
        script.main(["--benchmark", "navigation2d", "--budget", "long"])


def test_reptile_gets_the_meta_learners_env_steps_and_sampling_on_the_long_mujoco_budgets():
    """Both sample one batch per inner step and one after adaptation: at equal env steps
    Reptile (3 inner steps) runs half MAML-TRPO's iterations, with its sampler and actions."""
    from meta_rl.config import load_config

    script = load_script()

    def planned_env_steps(config) -> int:
        train = config.train
        batches = config.algo.num_inner_steps + 1
        return train.iterations * train.meta_batch_size * train.episodes_per_task * batches

    for name in ("halfcheetah_vel", "halfcheetah_dir"):
        benchmark = script.BENCHMARKS[name]
        for key, budget in benchmark.budgets.items():
            if not key.startswith("long"):
                continue
            maml = load_config(script._config_path("maml", benchmark, budget), budget.overrides)
            reptile_path = script._config_path("reptile", benchmark, budget)
            reptile = load_config(reptile_path, budget.reptile_overrides)
            assert planned_env_steps(reptile) == planned_env_steps(maml) > 0, (name, key)
            for setting in ("sampler", "num_workers", "clip_actions", "checkpoint_every"):
                assert getattr(reptile.train, setting) == getattr(maml.train, setting), setting
            assert reptile.env.max_episode_steps == maml.env.max_episode_steps


def _curve(method, means, **info):
    from meta_rl.evaluation import AdaptationCurve

    returns = [[m - 1.0, m, m + 1.0] for m in means]  # three tasks around each mean
    return AdaptationCurve(method, [0.1] * (len(means) - 1), returns, info=info)


def test_a_meta_learner_that_beats_the_oracle_is_flagged_in_the_report(tmp_path):
    script = load_script()
    oracle = _curve("oracle", [-10.0, -9.5, -9.8, -9.9], stopped="flat", train_env_steps=5000)
    fine = [_curve("maml_trpo", [-40.0, -15.0, -11.0, -9.6]), oracle]
    assert script.oracle_warnings(fine) == []
    beaten = [_curve("maml_trpo", [-40.0, -15.0, -9.0, -8.0]), _curve("random", [-5.0] * 4)]
    warnings = script.oracle_warnings([*beaten, oracle])
    assert len(warnings) == 1  # random's own return never counts: it is not adapted by MAML
    assert warnings[0].startswith("maml_trpo after 2 steps (-9.0) beats the oracle (its best: -9.5")
    # the pretrained baseline does not see the task either: beating the oracle at step 0 counts
    pretrained = _curve("pretrained", [-7.0, -12.0, -12.0, -12.0])
    assert script.oracle_warnings([pretrained, oracle])[0].startswith(
        "pretrained after 0 steps (-7.0) beats the oracle"
    )
    capped = _curve("oracle", [-10.0] * 4, stopped="cap", train_env_steps=5000)
    assert "reached its cap of 5.0 k env steps" in script.oracle_warnings([capped])[0]

    benchmark = script.BENCHMARKS["navigation2d"]
    args = script.parse_args(
        ["--benchmark", "navigation2d", "--budget", "tiny", "--results-dir", str(tmp_path)]
    )
    args.seed = 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.csv").write_text(
        "iteration,env_steps,return_pre_adapt,return_post_adapt\n0,100,-40.0,-15.0\n"
    )
    trained = {
        "maml_trpo": {
            "config": "c.yaml",
            "overrides": (),
            "run_dir": run,
            "iterations": 1,
            "train_env_steps": 100,
            "train_wall_s": 1.0,
            "status": "trained",
        }
    }
    path = script.write_report(
        args, benchmark, benchmark.budgets["tiny"], [*beaten, oracle], trained, 0.0, 0.5
    )
    text = path.read_text()
    assert f"**Warning: {warnings[0]}**" in text
    assert "MAML-TRPO here: 0.1 k, 0.0% of it" in text  # the shortfall against the paper's


def test_several_seeds_get_a_table_each_and_a_spread_over_them(tmp_path):
    script = load_script()
    results = tmp_path / "results"
    args = ["--benchmark", "navigation2d", "--budget", "tiny", "--skip", "reptile"]
    args += ["--work-dir", str(tmp_path / "work"), "--results-dir", str(results)]
    assert script.main([*args, "--seed", "1", "2"]) == 0
    assert (results / "navigation2d_tiny.md").is_file()
    assert "--seed 2`" in (results / "navigation2d_tiny_seed2.md").read_text()
    means = {}
    for stem in ("navigation2d_tiny", "navigation2d_tiny_seed2"):
        with (results / f"{stem}.csv").open() as f:
            for row in csv.DictReader(f):
                means.setdefault((row["method"], row["step"]), []).append(float(row["mean_return"]))
    rows = table_rows((results / "navigation2d_tiny_seeds.md").read_text())
    assert list(rows) == ["maml_trpo", "random", "pretrained", "oracle"]
    a, b = means[("maml_trpo", "1")]
    spread = abs(a - b) / 2**0.5  # the sample standard deviation of two values
    assert rows["maml_trpo"][1] == f"{(a + b) / 2:.1f} ± {spread:.1f} (n=2)"


def test_baselines_trained_side_by_side_equal_those_trained_in_process(tmp_path):
    """--jobs 2 trains pretrained and oracle in two spawned processes: same policies, so the
    same table, as --jobs 1 (in the script's own process)."""
    script = load_script()
    tables = {}
    for jobs in (1, 2):
        results = tmp_path / f"results{jobs}"
        args = ["--benchmark", "navigation2d", "--budget", "tiny", "--skip", "reptile"]
        args += ["--work-dir", str(tmp_path / f"work{jobs}"), "--results-dir", str(results)]
        assert script.main([*args, "--jobs", str(jobs)]) == 0
        markdown = (results / "navigation2d_tiny.md").read_text()
        tables[jobs] = {k: v[:4] for k, v in table_rows(markdown).items()}
        assert ("2 at a time (`--jobs 2`)" in markdown) == (jobs == 2)
    assert tables[1] == tables[2]


def test_a_ppo_budget_below_the_meta_learners_steps_is_stated():
    script = load_script()
    budget = script.Budget(ppo_timesteps=1_000_000)

    info = {"train_env_steps": 1_000_000, "settings_source": "zoo", "stopped": "budget"}
    curve = types.SimpleNamespace(method="pretrained", info=info)
    (line,) = script.baseline_lines([curve], budget, 16_000_000, jobs=1)
    assert "FEWER than the meta-learner's 16.00 M" in line
    (line,) = script.baseline_lines([curve], script.Budget(), 1_000_000, jobs=1)
    assert "the same env steps as the meta-learner (default)" in line


def load_summary():
    spec = importlib.util.spec_from_file_location(
        "experiments_summary", ROOT / "experiments" / "summary.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments_summary"] = module
    spec.loader.exec_module(module)
    return module


def test_the_readme_results_table_is_the_one_the_committed_tables_give():
    assert load_summary().main(["--check"]) == 0, "run: python experiments/summary.py"


def test_the_verdict_is_computed_from_intervals_env_steps_and_the_oracle():
    summary = load_summary()

    def result(maml, pre, oracle=None, pre_steps="1.00 M"):
        returns = {"maml_trpo": [(0.0, 1.0), maml], "pretrained": [(0.0, 1.0), pre]}
        if oracle is not None:
            returns["oracle"] = [oracle, oracle]
        steps = {"maml_trpo": "1.00 M", "pretrained": pre_steps, "oracle": pre_steps}
        return summary.Result("s", "b", "long", returns, steps, {}, None, True, True)

    assert summary.verdict(result((10, 2), (5, 2), (50, 1))) == (
        "reproduced: MAML above pretrained, oracle above both"
    )
    assert "(pretrained at fewer env steps)" in summary.verdict(
        result((10, 2), (5, 2), (50, 1), pre_steps="100.0 k")
    )
    assert "oracle is below MAML" in summary.verdict(result((10, 2), (5, 2), (8, 1)))
    assert summary.verdict(result((10, 3), (5, 3))).endswith("overlap")
    assert summary.verdict(result((1, 1), (5, 1))).endswith("MAML below pretrained")
    # the pretrained baseline is judged by its best step: here no adaptation (step 0)
    # a family that reports success (Meta-World) is judged by it, its benchmark's currency
    by_success = result((10, 2), (5, 2))
    by_success.success = {"maml_trpo": [(0.0, 1.0), (20.0, 5.0)], "pretrained": [(40.0, 5.0)] * 2}
    assert summary.verdict(by_success) == "not at this budget (success rate): MAML below pretrained"
    below_best = result((10, 2), (5, 2), (50, 1))
    below_best.returns["pretrained"][0] = (20.0, 2.0)
    assert summary.verdict(below_best).endswith("MAML below pretrained")


def test_reproduce_ml10_tiny_reports_success_on_training_and_held_out_tasks(tmp_path):
    pytest.importorskip("metaworld")
    script = load_script()
    args = ["--benchmark", "metaworld_ml10", "--budget", "tiny"]
    args += ["--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert script.main(args) == 0
    markdown = (tmp_path / "results" / "metaworld_ml10_tiny.md").read_text()
    # no oracle: ML10's held-out classes are skills no observation could reveal
    assert list(table_rows(markdown.split("Success rate")[0])) == [
        "maml_trpo",
        "random",
        "pretrained",
        "reptile",
        "reptile (own inner loop)",
    ]
    for method in ("maml_trpo", "reptile"):
        rows = script._progress({"run_dir": tmp_path / "work" / "metaworld_ml10_tiny" / method})
        mean = sum(float(r["success_post_adapt"]) for r in rows) / len(rows)
        assert f"- {method}, after adaptation: {mean:.1%}" in markdown
    assert "Published (not measured here): MAML-TRPO meta-test success 31.6-36 %" in markdown
    with Image.open(tmp_path / "results" / "metaworld_ml10_tiny_success.png") as image:
        assert image.format == "PNG"


def test_extending_a_run_whose_schedule_follows_its_length_is_one_line_not_a_hybrid(tmp_path):
    """A longer budget over a work dir whose Reptile run anneals eps over its own length would
    resume it on another schedule; ``train_or_reuse`` stops with the trainer's one line."""
    from meta_rl.config import load_config

    script = load_script()
    path = ROOT / "experiments" / "configs" / "reptile_navigation2d_ci.yaml"
    small = ["train.meta_batch_size=2", "train.episodes_per_task=2", "env.max_episode_steps=5"]
    script.train_or_reuse(load_config(path, [*small, "train.iterations=1"]), tmp_path / "r")
    with pytest.raises(SystemExit, match=r"train.iterations 1 -> 2: .*another --work-dir"):
        script.train_or_reuse(load_config(path, [*small, "train.iterations=2"]), tmp_path / "r")


def test_the_paired_difference_is_over_the_same_tasks_and_reaches_the_readme_row(tmp_path):
    """Task by task: a constant gap has no spread, whatever the spread between tasks."""
    from meta_rl.evaluation import AdaptationCurve

    script, summary = load_script(), load_summary()
    tasks = [-100.0, -50.0, 0.0, 40.0]  # wide between tasks: the two intervals overlap
    maml = AdaptationCurve("maml_trpo", [0.1] * 3, [[t - 9 for t in tasks], tasks, tasks, tasks])
    pre = AdaptationCurve(
        "pretrained", [0.1] * 3, [[t - 5 for t in tasks], [t - 7 for t in tasks]] * 2
    )
    (line, _) = script.paired_lines([maml, pre])
    assert line.startswith(
        "Paired over the same held-out tasks (return): MAML-TRPO after one step minus the "
        "pretrained baseline after 0 steps (its best): +5.0 ± 0.0 (95 % Student-t interval of "
        "the 4 per-task differences; MAML-TRPO higher on 4 of 4)."
    )
    assert script.paired_lines([maml]) == []
    table = tmp_path / "b_long.md"
    table.write_text(
        "# b: adaptation on held-out tasks (long budget)\n\n"
        "| method | after 0 steps | after 1 step | after 2 steps | after 3 steps | steps |\n"
        "|---|---|---|---|---|---|\n"
        "| maml_trpo | -10.0 ± 1.0 | -5.0 ± 1.0 | -5.0 ± 1.0 | -5.0 ± 1.0 | 1.00 M |\n\n"
        f"{line}\n",
        encoding="utf-8",
    )
    assert summary.parse(table).paired == "+5.0 ± 0.0"


def test_a_row_names_each_other_seed_when_there_is_no_spread_over_seeds(tmp_path):
    summary = load_summary()

    def write(stem: str, one_step: float) -> Path:
        path = tmp_path / f"{stem}.md"
        path.write_text(
            "# b: adaptation on held-out tasks (long budget)\n\n"
            "| method | after 0 steps | after 1 step | after 2 steps | after 3 steps | steps |\n"
            "|---|---|---|---|---|---|\n"
            f"| maml_trpo | -10.0 ± 1.0 | {one_step} ± 1.0 | -5.0 ± 1.0 | -5.0 ± 1.0 | 1.00 M |\n"
            "| pretrained | -20.0 ± 1.0 | -20.0 ± 1.0 | -20.0 ± 1.0 | -20.0 ± 1.0 | 1.00 M |\n\n"
            "- pretrained: SB3 PPO; settings: RL Baselines3 Zoo\n",
            encoding="utf-8",
        )
        return path

    first = summary.parse(write("b_long", -5.0))
    write("b_long_seed10", -19.5)
    write("b_long_seed2", 7.25)
    assert summary._seeds_note(first, tmp_path) == (
        "; seed 2: +7.2, reproduced; seed 10: -19.5, not at this budget"
    )
    (tmp_path / "b_long_seeds.md").write_text(
        "| method | after 0 steps | after 1 step |\n|---|---|---|\n"
        "| maml_trpo | -10.0 ± 0.0 (n=3) | -5.8 ± 13.4 (n=3) |\n",
        encoding="utf-8",
    )
    assert summary._seeds_note(first, tmp_path) == "; 3 seeds: -5.8 ± 13.4 (sd)"
