"""ProMP: its outer objective's gradient, the KL penalty's adaptation, and a bitwise resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from meta_rl.algorithms.maml_trpo import MAMLTRPO
from meta_rl.algorithms.promp import ProMP, adapted_coefficients
from meta_rl.algorithms.settings import MAMLTRPOSettings, PROMPSettings
from meta_rl.checkpoint import find_latest, load_checkpoint
from meta_rl.config import config_from_dict
from meta_rl.episodes import InnerBatch
from meta_rl.functional import policy_params
from meta_rl.trainer import train
from tests.fakes import TinyGaussian, random_episodes


def problem(num_inner_steps: int):
    gen = torch.Generator().manual_seed(0)
    policy = TinyGaussian(3, 2).double()
    inner = [
        InnerBatch(e, torch.randn(e.rewards.shape, generator=gen, dtype=torch.float64))
        for e in (random_episodes(gen, (6, 3, 2), 3, 2) for _ in range(num_inner_steps))
    ]
    post = random_episodes(gen, (6, 3, 2), 3, 2, ends=[(4, 1, 0)])
    advantages = torch.randn(post.rewards.shape, generator=gen, dtype=torch.float64)
    return policy, inner, post, advantages


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_clipped_objective_gradient_at_ratio_one_is_the_surrogate_gradient(num_inner_steps):
    """At the sampling-time parameters no ratio is clipped and every KL is at its minimum, so
    ProMP's gradient is MAML-TRPO's (estimator lvc) surrogate gradient."""
    policy, inner, post, advantages = problem(num_inner_steps)
    promp = ProMP(policy, PROMPSettings(num_inner_steps=num_inner_steps, kl_penalty=3.0))
    theta = policy_params(policy)
    old = promp.objective(theta, inner, post, advantages)
    current = promp.objective(theta, inner, post, advantages, old)
    assert all(kl.abs().item() < 1e-12 for kl in current.inner_kls)
    grads = torch.autograd.grad(current.loss, list(theta.values()))
    promp_grad = torch.cat([g.reshape(-1) for g in grads])
    settings = MAMLTRPOSettings(num_inner_steps=num_inner_steps, estimator="lvc", task_chunk=0)
    lin = MAMLTRPO(policy, settings).linearize(theta, inner, post, advantages)
    assert promp_grad.abs().max() > 1e-3
    torch.testing.assert_close(promp_grad, lin.grad, rtol=1e-10, atol=1e-12)


def test_kl_coefficients_double_above_and_halve_below_the_target():
    assert adapted_coefficients([1.0, 1.0, 1.0], [0.02, 0.005, 0.01], 0.01) == [2.0, 0.5, 1.0]


def test_a_step_moves_the_policy_and_adapts_each_coefficient_from_its_kl():
    policy, inner, post, advantages = problem(2)
    settings = PROMPSettings(num_inner_steps=2, outer_lr=0.05, promp_steps=3, kl_target=0.01)
    promp = ProMP(policy, settings)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = promp.step(inner, post, advantages)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    assert metrics["meta/surrogate_after"] < metrics["meta/surrogate_before"]
    kls = [metrics[f"promp/inner_kl_{k}"] for k in range(2)]
    assert all(kl > 0 for kl in kls)
    assert promp.kl_coefficients == adapted_coefficients([5e-4, 5e-4], kls, 0.01)


CI = {
    "env": {"id": "MetaRL/Navigation2D-v0", "max_episode_steps": 10},
    "policy": {"hidden_sizes": [16]},
    "algo": {"name": "promp", "promp_steps": 2, "kl_target": 1e-4},
    "train": {"meta_batch_size": 2, "episodes_per_task": 2, "seed": 1, "checkpoint_every": 1},
}


def test_promp_resume_is_bitwise(tmp_path: Path):
    config = config_from_dict(CI, ["train.iterations=4"])
    straight = train(config, run_dir=tmp_path / "straight")
    half = train(replace(config, train=replace(config.train, iterations=2)), tmp_path / "resumed")
    train(config, resume=half)
    a = load_checkpoint(find_latest(straight))["trainer"]
    b = load_checkpoint(find_latest(half))["trainer"]
    for name, value in a["policy"].items():
        assert torch.equal(value, b["policy"][name]), name
    state_a, state_b = a["meta_learner"]["promp"], b["meta_learner"]["promp"]
    assert state_a["kl_coefficients"] == state_b["kl_coefficients"] != [5e-4]  # it adapted
    for key, value in state_a["optimizer"]["state"][0].items():
        assert torch.equal(
            torch.as_tensor(value), torch.as_tensor(state_b["optimizer"]["state"][0][key])
        )
