"""Learners report their own phase timings (``meta_rl.timing``); no test here times speed."""

from __future__ import annotations

import pytest
import torch

from meta_rl.adaptation import AdvantageEstimator
from meta_rl.agents.policies import GaussianMLPPolicy
from meta_rl.algorithms.maml_trpo import MAMLTRPOLearner
from meta_rl.algorithms.reptile import ReptileLearner
from meta_rl.algorithms.settings import MAMLTRPOSettings, ReptileSettings
from meta_rl.samplers import VectorSampler
from meta_rl.timing import PhaseTimer, cuda_sync


def test_phase_timer_sums_entries_syncs_at_boundaries_and_restarts_on_take():
    calls: list[str] = []
    timer = PhaseTimer(sync=lambda: calls.append("sync"))
    with timer.phase("a"):
        calls.append("work")
    with timer.phase("a"):
        pass
    with timer.phase("b"):
        pass
    assert calls == ["sync", "work", "sync"] + ["sync"] * 4  # before and after every phase
    totals = timer.take()
    assert set(totals) == {"a", "b"} and all(t >= 0.0 for t in totals.values())
    assert timer.take() == {}


def test_phase_timer_counts_a_phase_that_raises():
    timer = PhaseTimer()
    with pytest.raises(RuntimeError), timer.phase("a"):
        raise RuntimeError("boom")
    assert "a" in timer.take()


def test_cpu_policies_need_no_sync():
    assert cuda_sync(GaussianMLPPolicy(2, 2, hidden_sizes=(4,))) is None


@pytest.mark.parametrize("algo", ["maml_trpo", "reptile"])
def test_an_iteration_reports_the_phases_it_ran(algo):
    sampler = VectorSampler("MetaRL/Navigation2D-v0", 2, 2, seed=0, max_episode_steps=5)
    gen = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), generator=gen)
    if algo == "maml_trpo":
        learner = MAMLTRPOLearner(policy, sampler, AdvantageEstimator(), MAMLTRPOSettings())
        phases = {"sampling", "advantages", "adaptation", "meta_gradient", "cg", "line_search"}
    else:
        settings = ReptileSettings(outer_anneal_iterations=1)
        learner = ReptileLearner(policy, sampler, AdvantageEstimator(), settings)
        phases = {"sampling", "advantages", "adaptation", "meta_gradient"}
    with learner.timer.phase("outside"):  # not part of the next iteration
        pass
    report = learner.iteration(sampler.sample_tasks())
    sampler.close()
    assert set(report.timings) == phases
    assert all(t > 0.0 for t in report.timings.values())
    # phases are disjoint parts of collect + update
    assert sum(report.timings.values()) <= report.sampling_s + report.optimize_s
