"""What each meta-gradient estimator estimates, proven on a family small enough to enumerate.

Two two-armed Bernoulli bandits (the arms' means swapped), horizon 2, one inner episode per
step: every inner batch is one of 16 (action, reward) sequences, so the expected
post-adaptation return ``J(theta) = mean_task sum_D p(D | theta) R(theta'(theta, D))`` is an
exact sum, differentiated by
autograd in float64. The inner step is the library's (``meta_rl.adaptation.adapt``), and the
Monte-Carlo estimates come from ``MAMLTRPO.linearize``, the code path training uses: its
gradient is of the surrogate ``-J / H`` (a mean over steps). Fixed seeds throughout.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from meta_rl.adaptation import REINFORCE, adapt, detached
from meta_rl.agents.pg import discounted_returns
from meta_rl.agents.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from meta_rl.algorithms.maml_trpo import MAMLTRPO, dice_sampling_weights
from meta_rl.algorithms.settings import MAMLTRPOSettings
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import expand_to_tasks, policy_params, task_distribution
from tests.fakes import random_episodes

# two tasks, the arms' success probabilities swapped: J and every estimate average over both
MEANS = torch.tensor([[0.2, 0.9], [0.9, 0.2]], dtype=torch.float64)
HORIZON, INNER_LR = 2, 1.0


def bandit_policy() -> CategoricalMLPPolicy:
    """Softmax over two arms with a constant input: logits = w + b."""
    policy = CategoricalMLPPolicy(1, 2, hidden_sizes=()).double()
    with torch.no_grad():
        policy.logits_net[0].weight.copy_(torch.tensor([[0.4], [-0.3]]))
        policy.logits_net[0].bias.copy_(torch.tensor([0.2, -0.1]))
    return policy


def bandit_episodes(actions: torch.Tensor, rewards: torch.Tensor, log_probs: torch.Tensor):
    """Episodes ``[H, N, 1]`` of the bandit (its observation is the constant one-hot 1.0)."""
    shape = actions.shape
    return Episodes(
        observations=torch.ones(shape[0] + 1, *shape[1:], 1, dtype=torch.float64),
        actions=actions,
        rewards=rewards,
        mask=torch.ones(shape, dtype=torch.float64),
        terminated=torch.zeros(shape, dtype=torch.bool),
        truncated=torch.arange(shape[0]).view(-1, 1, 1).expand(shape) == shape[0] - 1,
        log_probs=log_probs,
    )


def batch(episodes: Episodes) -> InnerBatch:
    """Advantages: returns-to-go (no baseline fitted on the batch, which would bias the post
    surrogate, and a function of the batch alone, so the enumeration can repeat it)."""
    return InnerBatch(episodes, discounted_returns(episodes.rewards, episodes.mask, 1.0))


def arm_probs(policy, params) -> torch.Tensor:
    """Each task's arm probabilities ``[N, 2]``."""
    obs = torch.ones(1, next(iter(params.values())).shape[0], 1, 1, dtype=torch.float64)
    return task_distribution(policy, params, obs, task_dim=1).probs[0, :, 0]


def exact_objective(policy, theta, num_inner_steps: int) -> torch.Tensor:
    """``J(theta)``: mean over the tasks of ``task_objective``."""
    return sum(task_objective(policy, theta, num_inner_steps, m) for m in MEANS) / len(MEANS)


def task_objective(policy, theta, num_inner_steps: int, means: torch.Tensor) -> torch.Tensor:
    """One task's: every sequence of inner batches, weighted by its probability, times the
    adapted policy's exact expected return ``H sum_a pi'(a) mu_a``."""
    outcomes = list(itertools.product(range(2), range(2)))  # (arm, reward) per step
    batches = list(itertools.product(outcomes, repeat=HORIZON))
    plans = list(itertools.product(range(len(batches)), repeat=num_inner_steps))
    n = len(plans)
    params = expand_to_tasks(theta, n)
    log_p = torch.zeros(n, dtype=torch.float64)
    for k in range(num_inner_steps):
        chosen = torch.tensor([[batches[plan[k]][t] for t in range(HORIZON)] for plan in plans])
        actions, rewards = chosen[..., 0].T.unsqueeze(-1), chosen[..., 1].T.unsqueeze(-1).double()
        log_pi = arm_probs(policy, params).log()  # [N, 2]
        step_lp = log_pi.gather(1, actions[..., 0].T).T.unsqueeze(-1)  # [H, N, 1]
        p_reward = torch.where(rewards > 0, means[actions], 1.0 - means[actions])
        log_p = log_p + (step_lp + p_reward.log()).sum(dim=(0, 2))
        episodes = bandit_episodes(actions, rewards, step_lp.detach())
        params = adapt(policy, params, batch(episodes), INNER_LR, loss=REINFORCE)
    post_return = HORIZON * (arm_probs(policy, params) * means).sum(-1)
    return (log_p.exp() * post_return).sum()


def sample(policy, params, gen: torch.Generator, horizon: int = HORIZON) -> Episodes:
    """One episode per task, each with its own parameters; tasks alternate between MEANS."""
    with torch.no_grad():
        probs = arm_probs(policy, params)
    n = probs.shape[0]
    u = torch.rand(horizon, n, 1, generator=gen, dtype=torch.float64)
    actions = (u > probs[:, 0].view(1, n, 1)).long()
    means = MEANS[torch.arange(n) % len(MEANS)]  # [N, arms]
    chosen = means.gather(1, actions[..., 0].T).T.unsqueeze(-1)
    rewards = torch.rand(horizon, n, 1, generator=gen, dtype=torch.float64) < chosen
    log_probs = probs.log().T[actions, torch.arange(n).view(1, n, 1)]
    return bandit_episodes(actions, rewards.double(), log_probs)


def estimates(
    estimator: str, num_inner_steps: int, calls: int, tasks: int, seed: int = 0, horizon=HORIZON
):
    """``calls`` independent meta-gradients of ``tasks`` tasks each (rows), by ``linearize``."""
    policy = bandit_policy()
    settings = MAMLTRPOSettings(
        inner_lr=INNER_LR, num_inner_steps=num_inner_steps, estimator=estimator, task_chunk=0
    )
    trpo = MAMLTRPO(policy, settings)
    theta = policy_params(policy)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(calls):
        params = detached(expand_to_tasks({k: v.detach() for k, v in theta.items()}, tasks))
        inner = []
        for _ in range(num_inner_steps):
            inner.append(batch(sample(policy, params, gen, horizon)))
            params = detached(trpo.inner_step(params, inner[-1]))
        post = sample(policy, params, gen, horizon)
        post_advantages = batch(post).advantages
        weights = None
        if estimator == "dice":
            weights = dice_sampling_weights(post, torch.ones(tasks, dtype=torch.float64))
        rows.append(trpo.linearize(theta, inner, post, post_advantages, weights).grad)
    return torch.stack(rows)


def z_scores(rows: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(mean - exact) / standard error, per coordinate."""
    return (rows.mean(0) - exact) / (rows.std(0) / rows.shape[0] ** 0.5)


def exact_gradient(num_inner_steps: int) -> torch.Tensor:
    policy = bandit_policy()
    theta = policy_params(policy)
    objective = exact_objective(policy, theta, num_inner_steps)
    grads = torch.autograd.grad(-objective / HORIZON, list(theta.values()))
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize(("num_inner_steps", "calls", "tasks"), [(1, 30, 600), (2, 20, 400)])
def test_dice_is_unbiased_and_maml_is_not(num_inner_steps, calls, tasks):
    exact = exact_gradient(num_inner_steps)
    dice = estimates("dice", num_inner_steps, calls, tasks)
    maml = estimates("maml", num_inner_steps, calls, tasks)
    assert z_scores(dice, exact).abs().max() < 3.0
    assert z_scores(maml, exact).abs().min() > 8.0  # the left-out sampling term is real


def test_lvc_has_less_variance_than_dice():
    """On a longer horizon (10 pulls, as the registered bandits), where DiCE's score-function
    term sums over every inner step; LVC keeps the curvature on each step alone."""
    dice = estimates("dice", 1, calls=80, tasks=50, seed=2, horizon=10)
    lvc = estimates("lvc", 1, calls=80, tasks=50, seed=2, horizon=10)
    assert lvc.var(0).sum() < 0.8 * dice.var(0).sum()


def test_the_enumeration_matches_a_monte_carlo_return():
    """The exact objective itself, against sampled post-adaptation returns."""
    policy = bandit_policy()
    exact = exact_objective(policy, policy_params(policy), 1).item()
    theta = {k: v.detach() for k, v in policy_params(policy).items()}
    gen = torch.Generator().manual_seed(3)
    params = detached(expand_to_tasks(theta, 200_000))
    adapted = adapt(policy, params, batch(sample(policy, params, gen)), INNER_LR)
    returns = sample(policy, {k: v.detach() for k, v in adapted.items()}, gen).episode_returns()
    assert abs(returns.mean().item() - exact) < 4 * returns.std().item() / 200_000**0.5


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_dice_term_is_the_same_through_the_closed_form_and_autograd(num_inner_steps):
    gen = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (8,), "tanh").double()
    policy.reset_parameters(torch.Generator().manual_seed(1))
    inner = [
        InnerBatch(e, torch.randn(e.rewards.shape, generator=gen, dtype=torch.float64))
        for e in (random_episodes(gen, (5, 4, 3), 3, 2) for _ in range(num_inner_steps))
    ]
    post = random_episodes(gen, (5, 4, 3), 3, 2)
    advantages = torch.randn(post.rewards.shape, generator=gen, dtype=torch.float64)
    weights = dice_sampling_weights(post, torch.ones(4, dtype=torch.float64))
    grads = []
    for analytic in (True, False):
        settings = MAMLTRPOSettings(
            num_inner_steps=num_inner_steps, estimator="dice", analytic=analytic, task_chunk=3
        )
        trpo = MAMLTRPO(policy, settings)
        lin = trpo.linearize(policy_params(policy), inner, post, advantages, weights)
        grads.append(lin.sampling_grad)
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)
