"""Policy-gradient pieces against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from meta_rl.agents.pg import (
    discounted_returns,
    gae,
    masked_task_mean,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
)


def col(*xs: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A [T, 1, E] tensor from E columns given as sequences."""
    return torch.tensor(xs, dtype=dtype).T.unsqueeze(1)


def random_batch(T: int = 7, N: int = 3, E: int = 4, seed: int = 0):
    """Random rewards/values, episode lengths in [1, T], terminated at the last valid step."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, E, generator=g, dtype=torch.float64)
    values = torch.randn(T + 1, N, E, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (N, E), generator=g)
    t = torch.arange(T).view(T, 1, 1)
    mask = (t < lengths).to(torch.float64)
    last = t == (lengths - 1)
    return rewards, values, mask, last


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discounted_returns_hand_values(dtype):
    rewards = col([1, 2, 3], [1, 2, 99], dtype=dtype)
    mask = col([1, 1, 1], [1, 1, 0], dtype=dtype)
    out = discounted_returns(rewards, mask, gamma=0.5)
    assert out.dtype == dtype
    expected = col([1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3], [1 + 0.5 * 2, 2, 0], dtype=dtype)
    torch.testing.assert_close(out, expected)


def test_discounted_returns_ignores_nan_after_episode_end():
    rewards = col([1.0, float("nan")])
    mask = col([1.0, 0.0])
    torch.testing.assert_close(discounted_returns(rewards, mask, 0.9), col([1.0, 0.0]))


def test_gae_hand_values_terminated_vs_truncated():
    gamma, lam = 0.9, 0.5
    # three episodes with the same rewards and values: terminated at t=2, truncated at t=2,
    # truncated at t=1 (its step t=2 is padding with a garbage reward).
    rewards = col([1, 2, 3], [1, 2, 3], [1, 2, 123])
    values = col([0.5, 1, 1.5, 2], [0.5, 1, 1.5, 2], [0.5, 1, 1.5, 2])
    mask = col([1, 1, 1], [1, 1, 1], [1, 1, 0])
    terminated = col([0, 0, 1], [0, 0, 0], [0, 0, 0]).bool()
    adv = gae(rewards, values, mask, terminated, gamma, lam)
    d0, d1 = 1 + 0.9 * 1 - 0.5, 2 + 0.9 * 1.5 - 1  # shared first two TD errors
    d2_term = 3 - 1.5  # no bootstrap after termination
    d2_trunc = 3 + 0.9 * 2 - 1.5  # bootstraps from V(s_3)
    gl = gamma * lam

    def chain(*ds):
        out, run = [], 0.0
        for d in reversed(ds):
            run = d + gl * run
            out.append(run)
        return out[::-1]

    expected = col(chain(d0, d1, d2_term), chain(d0, d1, d2_trunc), [*chain(d0, d1), 0.0])
    torch.testing.assert_close(adv, expected)
    # the numbers themselves, once, so a wrong `chain` cannot hide a wrong gae
    torch.testing.assert_close(adv[:, 0, 0], torch.tensor([2.76125, 3.025, 1.5], dtype=adv.dtype))
    torch.testing.assert_close(adv[:, 0, 2], torch.tensor([2.4575, 2.35, 0.0], dtype=adv.dtype))


def test_gae_lambda_one_is_returns_minus_values_without_truncation():
    rewards, values, mask, last = random_batch()
    adv = gae(rewards, values, mask, last, gamma=0.97, lam=1.0)
    expected = (discounted_returns(rewards, mask, 0.97) - values[:-1]) * mask
    torch.testing.assert_close(adv, expected)


def test_gae_lambda_zero_is_one_step_td():
    rewards, values, mask, last = random_batch(seed=1)
    terminated = last & (torch.rand(last.shape, generator=torch.Generator().manual_seed(2)) < 0.5)
    adv = gae(rewards, values, mask, terminated, gamma=0.9, lam=0.0)
    td = rewards + 0.9 * values[1:] * (~terminated) - values[:-1]
    torch.testing.assert_close(adv, td * mask)


def test_normalize_advantages_per_task_masked_moments():
    _, _, mask, _ = random_batch(T=9, N=3, E=5, seed=3)
    g = torch.Generator().manual_seed(4)
    scale = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64).view(1, 3, 1)
    adv = torch.randn(mask.shape, generator=g, dtype=torch.float64) * scale + 3.0
    adv = torch.where(mask > 0, adv, torch.full_like(adv, float("nan")))
    out = normalize_advantages(adv, mask, per_task=True, eps=0.0)
    assert torch.all(out[mask == 0] == 0)
    for n in range(3):
        v = out[:, n][mask[:, n] > 0]
        torch.testing.assert_close(v.mean(), v.new_tensor(0.0), atol=1e-12, rtol=0)
        torch.testing.assert_close(v.std(unbiased=False), v.new_tensor(1.0))


def test_normalize_advantages_batch_wide():
    _, _, mask, _ = random_batch(seed=5)
    adv = torch.randn(mask.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = normalize_advantages(adv, mask, per_task=False, eps=0.0)
    v = out[mask > 0]
    torch.testing.assert_close(v.mean(), v.new_tensor(0.0), atol=1e-12, rtol=0)
    torch.testing.assert_close(v.std(unbiased=False), v.new_tensor(1.0))
    # eps enters as (a - mean) / (std + eps)
    a = adv[mask > 0]
    expected = (a - a.mean()) / (a.std(unbiased=False) + 0.5)
    torch.testing.assert_close(normalize_advantages(adv, mask, False, 0.5)[mask > 0], expected)


def test_reinforce_loss_matches_hand_loop_and_gradient():
    _, adv, mask, _ = random_batch(T=6, N=3, E=4, seed=7)
    adv = adv[:-1]
    g = torch.Generator().manual_seed(8)
    lp = torch.randn(mask.shape, generator=g, dtype=torch.float64)
    lp = torch.where(mask > 0, lp, torch.full_like(lp, float("nan"))).requires_grad_()
    loss = reinforce_loss(lp, adv, mask)
    assert loss.shape == (3,)
    for n in range(3):
        terms = [
            -lp[t, n, e].item() * adv[t, n, e].item()
            for t in range(6)
            for e in range(4)
            if mask[t, n, e] > 0
        ]
        assert loss[n].item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    count = mask.sum(dim=(0, 2), keepdim=True)
    torch.testing.assert_close(grad, -adv * mask / count)


def test_reinforce_loss_does_not_differentiate_advantages():
    adv = torch.ones(2, 1, 1, requires_grad=True)
    lp = torch.zeros(2, 1, 1, requires_grad=True)
    reinforce_loss(lp, adv, torch.ones(2, 1, 1)).sum().backward()
    assert adv.grad is None


def test_ppo_clip_loss_hand_values():
    ratios = [1.5, 1.5, 0.5, 1.0]
    adv = col([1.0], [-1.0], [-1.0], [2.0])  # T=1, N=1, E=4
    old = col([0.1], [-0.3], [0.2], [0.0])
    lp = old + torch.log(torch.tensor(ratios, dtype=torch.float64)).view(1, 1, 4)
    lp.requires_grad_()
    mask = torch.ones_like(adv)
    loss = ppo_clip_loss(lp, old, adv, mask, clip=0.2)
    # surrogates: clipped 1.2, unclipped -1.5, clipped -0.8, unclipped 2.0
    torch.testing.assert_close(loss, torch.tensor([-(1.2 - 1.5 - 0.8 + 2.0) / 4], dtype=lp.dtype))
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    torch.testing.assert_close(grad, col([0.0], [1.5 / 4], [0.0], [-2.0 / 4]))


def test_ppo_at_ratio_one_has_the_reinforce_gradient():
    _, adv, mask, _ = random_batch(seed=9)
    adv = adv[:-1]
    lp = torch.randn(mask.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    lp.requires_grad_()
    (g_ppo,) = torch.autograd.grad(ppo_clip_loss(lp, lp, adv, mask, 0.2).sum(), lp)
    (g_pg,) = torch.autograd.grad(reinforce_loss(lp, adv, mask).sum(), lp)
    torch.testing.assert_close(g_ppo, g_pg)


def test_masked_task_mean_empty_task_is_zero():
    x = torch.ones(2, 2, 1)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).unsqueeze(-1)
    torch.testing.assert_close(masked_task_mean(x, mask), torch.tensor([1.0, 0.0]))
    assert not math.isnan(masked_task_mean(x, mask)[1].item())
