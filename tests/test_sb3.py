"""SB3 adapters: the actor as our policy, SB3 PPO/A2C as Reptile's inner loop, families in SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from torch.func import functional_call

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.adaptation import AdvantageEstimator
from meta_rl.agents.sb3 import SB3Actor, SB3InnerLearner, make_sb3_policy
from meta_rl.algorithms.reptile import ReptileLearner, ReptileSettings
from meta_rl.functional import policy_params
from meta_rl.samplers import VectorSampler, encode_observations

NAV = "MetaRL/Navigation2D-v0"
FAMILIES = [
    "MetaRL/Navigation2D-v0",
    "MetaRL/HalfCheetahVel-v0",
    "MetaRL/HalfCheetahDir-v0",
    "MetaRL/AntVel-v0",
    "MetaRL/AntDir-v0",
    "MetaRL/AntGoal-v0",
    "MetaRL/Bandit-K5-v0",
    "MetaRL/TabularMDP-v0",
]
SMALL_PPO = {"n_steps": 32, "batch_size": 16, "n_epochs": 2}


def actor_for(env_id: str, seed: int = 0) -> SB3Actor:
    env = gym.make(env_id)
    gen = torch.Generator().manual_seed(seed)
    return SB3Actor(
        make_sb3_policy(env.observation_space, env.action_space, (16, 16), "tanh", 1.0, gen)
    )


def theta_of(actor: SB3Actor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy_params(actor).items()}


@pytest.mark.parametrize("env_id", FAMILIES)
def test_families_pass_sb3_check_env_unchanged(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, warn=False)
    check_env(env, warn=False)


@pytest.mark.parametrize("env_id", [NAV, "MetaRL/Bandit-K5-v0", "MetaRL/TabularMDP-v0"])
def test_actor_distribution_is_sb3_policys_distribution(env_id):
    actor = actor_for(env_id)
    env = gym.make(env_id)
    env.action_space.seed(0)
    env.observation_space.seed(0)
    raw = np.stack([env.observation_space.sample() for _ in range(6)])
    obs = torch.from_numpy(encode_observations(env.observation_space, raw))
    with torch.no_grad():
        ours = actor(obs.view(2, 3, -1))  # any batch shape
        theirs = actor.sb3_policy.get_distribution(torch.as_tensor(raw)).distribution
        with torch.random.fork_rng(devices=[]):  # distributions draw from the global RNG
            torch.manual_seed(0)
            actions = ours.sample()
        torch.testing.assert_close(
            ours.log_prob(actions).reshape(6), _sb3_log_prob(theirs, actions)
        )
        torch.testing.assert_close(ours.entropy().reshape(6), _sb3_entropy(theirs))
    assert set(actor.sb3_names().values()) == {
        n for n, _ in actor.sb3_policy.named_parameters() if "value" not in n
    }


def _sb3_log_prob(dist, actions):
    log_prob = dist.log_prob(actions.reshape(6, *actions.shape[2:]))
    return log_prob.sum(-1) if log_prob.dim() == 2 else log_prob


def _sb3_entropy(dist):
    entropy = dist.entropy()
    return entropy.sum(-1) if entropy.dim() == 2 else entropy


def test_round_trip_budget_zero_then_learn_changes_params_and_matches_sb3():
    actor = actor_for(NAV)
    theta = theta_of(actor)
    learner = SB3InnerLearner("ppo", actor, NAV, steps=0, seed=0, algo_kwargs=SMALL_PPO)
    out, used = learner.learn(theta, {"goal": [0.3, -0.2]})
    assert used == 0
    assert out.keys() == theta.keys()
    for name in theta:
        assert torch.equal(out[name], theta[name]), name

    learner.steps = 64
    out, used = learner.learn(theta, {"goal": [0.3, -0.2]})
    assert used == 64
    assert learner.env.envs[0].unwrapped.task == {"goal": [0.3, -0.2]}
    assert all(not torch.equal(out[k], theta[k]) for k in theta)
    # ours, evaluated with theta', is the distribution of the SB3 policy that learn() left
    obs = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = functional_call(actor, out, (obs,))
        theirs = learner.model.policy.get_distribution(obs).distribution
    torch.testing.assert_close(ours.mean, theirs.mean)
    torch.testing.assert_close(ours.stddev, theirs.stddev)
    # the module passed in was not touched, and the next call starts again from the same critic
    for name, value in policy_params(actor).items():
        assert torch.equal(value, theta[name])
    critic = {k: v.clone() for k, v in learner.model.policy.state_dict().items() if "value" in k}
    learner.steps = 0
    learner.learn(theta, {"goal": [0.0, 0.0]})
    for k, v in learner.model.policy.state_dict().items():
        if "value" in k:
            assert torch.equal(v, learner.initial[k]) and not torch.equal(v, critic[k])


def test_sb3_ppo_trains_on_half_cheetah_vel_with_its_task():
    env = gym.make("MetaRL/HalfCheetahVel-v0")
    env.unwrapped.task = {"velocity": 1.5}
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, device="cpu", seed=0)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    assert model.get_env().get_attr("task")[0] == {"velocity": 1.5}
    assert any(not torch.equal(v, before[k]) for k, v in model.policy.state_dict().items())
    # every stored reward is the family's: -|v - 1.5| - control cost <= 0
    assert (model.rollout_buffer.rewards <= 0).all()


def test_reptile_with_sb3_inner_learner_averages_what_sb3_learned():
    actor = actor_for(NAV)
    sampler = VectorSampler(NAV, 2, 2, seed=0, max_episode_steps=10)
    learner = SB3InnerLearner("a2c", actor, NAV, steps=20, seed=3, algo_kwargs={"n_steps": 10})
    reptile = ReptileLearner(
        actor,
        sampler,
        AdvantageEstimator(),
        ReptileSettings(outer_lr=0.5, outer_anneal_iterations=10),
        task_learner=learner,
    )
    tasks = sampler.sample_tasks()
    theta = theta_of(actor)
    rng_before = learner.state_dict()
    rollouts = reptile.collect(tasks)
    reptile.update(rollouts)
    # replay the inner learner from the same stream: the same theta_i', task by task
    learner.load_state_dict(rng_before)
    replay = [learner.learn(theta, task) for task in tasks]
    assert rollouts.env_steps == sum(b.num_steps for b in rollouts.batches) + 40
    for name, value in policy_params(actor).items():
        stacked = torch.stack([params[name] for params, _ in replay])
        torch.testing.assert_close(rollouts.adapted[name], stacked)
        torch.testing.assert_close(value, theta[name] + 0.5 * (stacked - theta[name]).mean(0))
