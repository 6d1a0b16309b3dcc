"""Small deterministic problems shared by the numeric tests (float64, seeded generators), a
pickle that runs code, and the real `meta-rl` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Independent, Normal

from meta_rl.episodes import Episodes


class TinyGaussian(nn.Module):
    """A small smooth (tanh) Gaussian policy, so finite differences are accurate in float64.

    ``nn.Linear``'s default initialisation draws from the global torch RNG; it runs inside
    ``fork_rng`` seeded with ``seed``, so the weights are fixed and the caller's RNG untouched.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int = 5, log_std: float = -0.3, seed: int = 0
    ):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, act_dim)
        self.net = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), log_std))

    def forward(self, obs: torch.Tensor) -> Independent:
        normal = Normal(self.net(obs), self.log_std.exp(), validate_args=False)
        return Independent(normal, 1, validate_args=False)


def random_episodes(
    gen: torch.Generator,
    shape: tuple[int, int, int],
    obs_dim: int,
    act_dim: int,
    ends: Sequence[tuple[int, int, int]] = (),
) -> Episodes:
    """Random float64 episodes ``[T, N, E]``; each ``(t, task, episode)`` in ``ends`` makes that
    episode end before step ``t`` (variable lengths: steps after the end must not matter)."""
    horizon, num_tasks, episodes = shape
    mask = torch.ones(shape, dtype=torch.float64)
    for t, task, episode in ends:
        mask[t:, task, episode] = 0.0
    return Episodes(
        observations=torch.randn(
            horizon + 1, num_tasks, episodes, obs_dim, generator=gen, dtype=torch.float64
        ),
        actions=torch.randn(*shape, act_dim, generator=gen, dtype=torch.float64),
        rewards=torch.randn(*shape, generator=gen, dtype=torch.float64),
        mask=mask,
        terminated=torch.zeros(shape, dtype=torch.bool),
        truncated=torch.zeros(shape, dtype=torch.bool),
        log_probs=torch.zeros(shape, dtype=torch.float64),
    )


def _mark_executed(path: str) -> str:
    Path(path).write_text("pwned")
    return "pwned"


class Evil:
    """Unpickling this runs _mark_executed: exactly what weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_mark_executed, (str(self.marker),))


def meta_rl(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`meta-rl ARGS` as a user runs it: a fresh process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "meta_rl.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
