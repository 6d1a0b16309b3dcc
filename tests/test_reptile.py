"""Reptile: the meta-update against its formula, the batched inner loop against per-task loops."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meta_rl.adaptation import AdvantageEstimator
from meta_rl.agents.pg import ppo_clip_loss, reinforce_loss
from meta_rl.agents.policies import GaussianMLPPolicy
from meta_rl.algorithms.reptile import Reptile, ReptileLearner, ReptileSettings
from meta_rl.checkpoint import find_latest, load_checkpoint
from meta_rl.config import load_config
from meta_rl.episodes import Episodes
from meta_rl.runs import RunDirError
from meta_rl.trainer import train

CI_CONFIG = Path(__file__).parents[1] / "experiments" / "configs" / "reptile_navigation2d_ci.yaml"
T, N, E, OBS, ACT = 5, 3, 4, 2, 2


def tiny_module() -> nn.Module:
    module = nn.Linear(3, 2).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        module.bias.copy_(torch.tensor([0.25, -0.75]))
    return module


def hand_adapted(num_updates: int) -> list[dict[str, torch.Tensor]]:
    """Given inner results theta_i' (3 tasks) for every meta-update: the test's fixed inputs."""
    gen = torch.Generator().manual_seed(7)
    return [
        {
            "weight": torch.randn(3, 2, 3, generator=gen, dtype=torch.float64),
            "bias": torch.randn(3, 2, generator=gen, dtype=torch.float64),
        }
        for _ in range(num_updates)
    ]


def test_interpolation_follows_formula_and_linear_eps_schedule():
    module = tiny_module()
    settings = ReptileSettings(outer_lr=1.0, outer_lr_final=0.2, outer_anneal_iterations=4)
    reptile = Reptile(module, settings)
    expected_eps = [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]  # linear over 4 updates, then flat
    theta = {k: v.detach().clone() for k, v in module.named_parameters()}
    for eps, adapted in zip(expected_eps, hand_adapted(6), strict=True):
        metrics = reptile.meta_step(adapted)
        assert metrics["reptile/epsilon"] == pytest.approx(eps)
        for name in theta:  # theta <- theta + eps * mean_i(theta_i' - theta)
            theta[name] = theta[name] + eps * (adapted[name] - theta[name]).mean(dim=0)
            torch.testing.assert_close(dict(module.named_parameters())[name], theta[name])
    assert reptile.updates == 6


def test_outer_sgd_equals_interpolation_and_outer_adam_follows_its_formula():
    adapted = hand_adapted(3)
    plain, sgd, adam = tiny_module(), tiny_module(), tiny_module()
    base = ReptileSettings(outer_lr=0.5, outer_lr_final=0.1, outer_anneal_iterations=2)
    reptiles = [
        Reptile(plain, base),
        Reptile(sgd, replace(base, outer_optimizer="sgd")),
        Reptile(adam, replace(base, outer_optimizer="adam")),
    ]
    theta = {k: v.detach().clone() for k, v in adam.named_parameters()}
    m = {k: torch.zeros_like(v) for k, v in theta.items()}
    v2 = {k: torch.zeros_like(v) for k, v in theta.items()}
    for step, (eps, inner) in enumerate(zip([0.5, 0.3, 0.1], adapted, strict=True), 1):
        for reptile in reptiles:
            reptile.meta_step(inner)
        for name in theta:  # Adam on the pseudo-gradient theta - mean(theta'), lr = eps
            g = theta[name] - inner[name].mean(dim=0)
            m[name] = 0.9 * m[name] + 0.1 * g
            v2[name] = 0.999 * v2[name] + 0.001 * g**2
            m_hat, v_hat = m[name] / (1 - 0.9**step), v2[name] / (1 - 0.999**step)
            theta[name] = theta[name] - eps * m_hat / (v_hat.sqrt() + 1e-8)
    for (name, p), q in zip(plain.named_parameters(), sgd.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(dict(adam.named_parameters())[name], theta[name])


def test_state_dict_resumes_schedule_and_outer_moments_exactly():
    adapted = hand_adapted(4)
    settings = ReptileSettings(outer_lr=0.5, outer_anneal_iterations=4, outer_optimizer="adam")
    straight = tiny_module()
    reference = Reptile(straight, settings)
    for inner in adapted:
        reference.meta_step(inner)
    first = tiny_module()
    run = Reptile(first, settings)
    for inner in adapted[:2]:
        run.meta_step(inner)
    resumed_module = tiny_module()
    resumed_module.load_state_dict(first.state_dict())
    resumed = Reptile(resumed_module, settings)
    resumed.load_state_dict(run.state_dict())
    for inner in adapted[2:]:
        resumed.meta_step(inner)
    for p, q in zip(straight.parameters(), resumed_module.parameters(), strict=True):
        assert torch.equal(p, q)


class RecordingSampler:
    """Stands in for VectorSampler: fresh random episodes per call, records the params it got."""

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(3)
        self.seen: list[dict[str, torch.Tensor]] = []
        self.batches: list[Episodes] = []

    def sample(self, policy, params, tasks) -> Episodes:
        self.seen.append({k: v.detach().clone() for k, v in params.items()})
        gen, dt = self.gen, torch.float64
        mask = torch.ones(T, N, E, dtype=dt)
        mask[3:, 1, 2] = 0.0
        actions = torch.randn(T, N, E, ACT, generator=gen, dtype=dt)
        obs = torch.randn(T + 1, N, E, OBS, generator=gen, dtype=dt)
        with torch.no_grad():  # behaviour log-probs under the params it was called with
            log_probs = torch.stack(
                [
                    functional_call(
                        policy, {k: v[i] for k, v in params.items()}, (obs[:-1, i],)
                    ).log_prob(actions[:, i])
                    for i in range(N)
                ],
                dim=1,
            )
        episodes = Episodes(
            observations=obs,
            actions=actions,
            rewards=torch.randn(T, N, E, generator=gen, dtype=dt),
            mask=mask,
            terminated=torch.zeros(T, N, E, dtype=torch.bool),
            truncated=torch.zeros(T, N, E, dtype=torch.bool),
            log_probs=log_probs,
        )
        self.batches.append(episodes)
        return episodes


@pytest.mark.parametrize(
    ("optimizer", "loss", "epochs"), [("sgd", "reinforce", 1), ("adam", "ppo", 3)]
)
def test_inner_loop_uses_fresh_episodes_and_per_task_optimisers(optimizer, loss, epochs):
    policy = GaussianMLPPolicy(OBS, ACT, (4,), "tanh", generator=torch.Generator().manual_seed(0))
    policy = policy.double()
    sampler = RecordingSampler()
    advantages = AdvantageEstimator()
    settings = ReptileSettings(
        inner_lr=0.05,
        inner_optimizer=optimizer,
        outer_anneal_iterations=500,
        num_inner_steps=3,
        inner_loss=loss,
        ppo_epochs=epochs,
    )
    learner = ReptileLearner(policy, sampler, advantages, settings)
    theta = {k: v.detach().clone() for k, v in policy.named_parameters()}
    rollouts = learner.collect([{}] * N)

    # one fresh batch before each inner step and one after the last; rollouts keep them all
    assert len(sampler.batches) == 4 and rollouts.batches == sampler.batches
    assert rollouts.returns == [b.mean_return() for b in sampler.batches]
    assert rollouts.env_steps == sum(b.num_steps for b in sampler.batches)

    # reference: each task alone, its own optimiser, on the batches sampled with its own params
    for task in range(N):
        params = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        opt_cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        opt = opt_cls(params.values(), lr=0.05)
        for step, batch in enumerate(sampler.batches[:3]):
            for name, value in params.items():  # the sampler saw this task's current params
                torch.testing.assert_close(sampler.seen[step][name][task], value.detach())
            adv, _ = advantages(batch)
            sl = slice(task, task + 1)
            for _ in range(epochs):
                dist = functional_call(policy, params, (batch.observations[:-1, sl],))
                log_probs = dist.log_prob(batch.actions[:, sl])
                if loss == "reinforce":
                    task_loss = reinforce_loss(log_probs, adv[:, sl], batch.mask[:, sl])
                else:
                    old = batch.log_probs[:, sl]
                    task_loss = ppo_clip_loss(log_probs, old, adv[:, sl], batch.mask[:, sl], 0.2)
                opt.zero_grad()
                task_loss.sum().backward()
                opt.step()
        for name, value in params.items():
            torch.testing.assert_close(rollouts.adapted[name][task], value.detach())
            torch.testing.assert_close(sampler.seen[3][name][task], value.detach())
    # tasks really got different parameters, and the module itself was not touched
    assert not torch.allclose(rollouts.adapted["log_std"][0], rollouts.adapted["log_std"][1])
    for name, value in policy.named_parameters():
        assert torch.equal(value, theta[name])


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def test_reptile_learns_navigation_at_ci_scale(tmp_path):
    run_dir = train(load_config(CI_CONFIG), run_dir=tmp_path / "run")
    progress = rows(run_dir)
    first, last = progress[0], progress[-1]
    # fixed seed: after meta-training, k inner steps reach a better return than at iteration 0
    assert float(last["return_post_adapt"]) > float(first["return_post_adapt"]) + 5.0
    assert float(first["return_post_adapt"]) > float(first["return_pre_adapt"])  # steps help
    assert [float(r["reptile_epsilon"]) for r in progress] == pytest.approx(
        [1.0 - i / len(progress) for i in range(len(progress))]
    )


def test_reptile_resume_is_bitwise(tmp_path):
    overrides = [
        "train.meta_batch_size=2",
        "train.episodes_per_task=2",
        "env.max_episode_steps=10",
        "algo.outer_optimizer=adam",
        "algo.outer_anneal_iterations=4",
        "train.checkpoint_every=1",
    ]
    config = load_config(CI_CONFIG, [*overrides, "train.iterations=4"])
    straight = train(config, run_dir=tmp_path / "straight")
    half = train(replace(config, train=replace(config.train, iterations=2)), tmp_path / "resumed")
    train(config, resume=half)
    a = load_checkpoint(find_latest(straight))["trainer"]
    b = load_checkpoint(find_latest(half))["trainer"]
    for name, value in a["policy"].items():
        assert torch.equal(value, b["policy"][name]), name
    assert a["meta_learner"]["reptile"]["updates"] == b["meta_learner"]["reptile"]["updates"] == 4
    assert [r["return_post_adapt"] for r in rows(straight)] == [
        r["return_post_adapt"] for r in rows(half)
    ]


def test_a_run_whose_eps_schedule_follows_its_length_cannot_change_it_on_resume(tmp_path):
    """``outer_anneal_iterations: null`` anneals eps over ``train.iterations``: 2 iterations
    extended to 4 would have run their first 2 on a schedule of 2 (eps 1, 0.5) and a fresh 4
    on one of 4 (eps 1, 0.75), so the resume is refused before anything is written."""
    overrides = ["train.meta_batch_size=2", "train.episodes_per_task=2", "env.max_episode_steps=10"]
    short = load_config(CI_CONFIG, [*overrides, "train.iterations=2"])
    assert short.algo.outer_anneal_iterations is None
    run_dir = train(short, run_dir=tmp_path / "run")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    longer = replace(short, train=replace(short.train, iterations=4))
    with pytest.raises(RunDirError, match=r"train.iterations 2 -> 4: algo.outer_anneal_iterations"):
        train(longer, resume=run_dir)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    train(short, resume=run_dir)  # the same length: nothing to do, no error
    fixed = replace(short, algo=replace(short.algo, outer_anneal_iterations=2))
    assert fixed.algo.follows_run_length() is None  # an explicit schedule may be run longer
    constant = replace(short.algo, outer_lr_final=short.algo.outer_lr)
    assert constant.follows_run_length() is None  # so may a constant eps


CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("reptile_*.yaml")), ids=lambda p: p.stem)
def test_reptile_configs_load_and_are_reptile(path):
    config = load_config(path)
    assert config.algo.name == "reptile"
    assert config.algo.sb3_algo is None or config.policy.kind == "sb3"


@pytest.mark.parametrize(
    ("config_name", "overrides", "param"),
    [
        (
            "reptile_sb3ppo_navigation2d",
            ["algo.sb3_steps=20", "algo.sb3_kwargs={n_steps: 10, batch_size: 10}"],
            "action_net.weight",
        ),
        (
            "reptile_navigation2d",
            ["policy.kind=gru", "policy.hidden_sizes=[8]"],
            "hidden_gates.weight",
        ),
    ],
)
def test_trainer_builds_sb3_and_gru_policies_from_the_config(
    tmp_path, config_name, overrides, param
):
    small = [
        "train.meta_batch_size=2",
        "train.episodes_per_task=2",
        "env.max_episode_steps=10",
        "train.num_threads=1",
    ]
    config = load_config(
        CONFIGS / f"{config_name}.yaml", [*small, *overrides, "train.iterations=2"]
    )
    run_dir = train(config, run_dir=tmp_path / "run")
    progress = rows(run_dir)
    assert len(progress) == 2
    policy = load_checkpoint(find_latest(run_dir))["trainer"]["policy"]
    assert param in policy
    assert all("value" not in name for name in policy)  # the SB3 critic is not meta-learned
