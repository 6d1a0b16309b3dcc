"""Policy-gradient pieces as pure functions on ``[T, N, E]`` tensors (time, task, episode).

Each ``(n, e)`` column holds one episode: ``mask`` is 1 on its steps and 0 after the last one
(``in_episode = mask > 0`` below), so an episode's sums stop at its end. Losses are returned per
task (shape ``[N]``) so a meta-learner can take one gradient per task. Steps after an episode's
end may hold any value, even NaN: they are dropped with ``where``, never multiplied by zero
(``NaN * 0 = NaN``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x[T, N, E]`` over each task's episode steps -> ``[N]`` (0 for a task with none)."""
    in_episode = mask > 0
    total = torch.where(in_episode, x, 0.0).sum(dim=(0, 2))
    return total / in_episode.sum(dim=(0, 2)).clamp(min=1).to(total.dtype)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go within each episode, ``R_t = r_t + gamma * R_{t+1}``; 0 after its end.

    No bootstrap at a truncation: this is the Monte-Carlo return the baseline regresses on.
    """
    in_episode = mask > 0
    rewards = torch.where(in_episode, rewards, 0.0)
    out = []
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = torch.where(in_episode[t], rewards[t] + gamma * running, 0.0)
        out.append(running)
    return torch.stack(out[::-1])


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    terminated: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016) -> advantages ``[T, N, E]``.

    ``values`` is ``[T+1, N, E]``: ``values[t]`` is V(s_t) and the row after an episode's last
    in-episode step is V of its final next-observation. ``delta_t = r_t + gamma * V_{t+1} *
    (1 - terminated_t) - V_t``: a truncated episode bootstraps from V(s_{t+1}) (the task went on,
    only the time limit stopped it), a terminated one does not (nothing follows).
    Advantages accumulate backward with ``gamma * lam`` and restart after each episode's end.
    """
    in_episode = mask > 0
    not_done = (~terminated.bool()).to(values.dtype)
    deltas = rewards + gamma * values[1:] * not_done - values[:-1]
    deltas = torch.where(in_episode, deltas, 0.0)
    out = []
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = torch.where(in_episode[t], deltas[t] + gamma * lam * running, 0.0)
        out.append(running)
    return torch.stack(out[::-1])


def normalize_advantages(
    advantages: Tensor, mask: Tensor, per_task: bool = True, eps: float = 1e-8
) -> Tensor:
    """Shift and scale to masked mean 0 and std 1, per task (over T and E) or over the batch.

    As pytorch-maml-rl's ``weighted_normalize``: population std, ``(a - mean) / (std + eps)``,
    0 after an episode's end. Per task by default so one task's reward scale does not set
    another's step size.
    """
    in_episode = mask > 0
    dims = (0, 2) if per_task else (0, 1, 2)
    count = in_episode.sum(dim=dims, keepdim=True).clamp(min=1).to(advantages.dtype)
    a = torch.where(in_episode, advantages, 0.0)
    mean = a.sum(dim=dims, keepdim=True) / count
    centred = torch.where(in_episode, advantages - mean, 0.0)
    std = (centred.pow(2).sum(dim=dims, keepdim=True) / count).sqrt()
    return centred / (std + eps)


def reinforce_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-task masked mean of ``-log_prob * advantage`` -> ``[N]``.

    Advantages are constants of the estimator, so they are detached here: a gradient through a
    baseline or return computation would bias it.
    """
    in_episode = mask > 0
    log_probs = torch.where(in_episode, log_probs, 0.0)
    advantages = torch.where(in_episode, advantages.detach(), 0.0)
    return masked_task_mean(-log_probs * advantages, mask)


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip: float,
) -> Tensor:
    """PPO's clipped surrogate (Schulman et al. 2017), negated, per task -> ``[N]``.

    ``-min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A)`` with ``ratio = exp(log_prob -
    old_log_prob)``; old log-probs and advantages are detached (the data's, not the policy's).
    """
    in_episode = mask > 0
    log_ratio = torch.where(in_episode, log_probs - old_log_probs.detach(), 0.0)
    ratio = log_ratio.exp()
    adv = torch.where(in_episode, advantages.detach(), 0.0)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    return masked_task_mean(-surrogate, mask)
