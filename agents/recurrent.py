"""Recurrent policies, and the small protocol through which samplers and losses run them.

The recurrent-policy protocol (detected with ``is_recurrent``):

- ``initial_state(batch_shape) -> Tensor[*batch_shape, H]``: the state before an episode's
  first step. A method, not a parameter: it depends on no parameter (zeros here).
- ``forward(obs[T, *B, D], state[*B, H]) -> (Distribution, Tensor[*B, H])``: run a time-major
  sequence from ``state``; the distribution has batch shape ``[T, *B]``; the tensor is the
  state after the last step.

A sampler calls ``forward`` with ``T = 1`` at every step and carries the state from one step to
the next; the losses call it once on whole episodes (``T`` = horizon) from ``initial_state``.
Every column of a batch is one episode from its first step, so no state is ever reset mid
sequence; the steps after an episode's end change no earlier output (the recurrence is causal)
and the losses mask them out. Like every policy, it must be a pure function of its registered
parameters (``functional_call`` under ``vmap``), so the GRU cell is written out with
``nn.Linear``s instead of ``nn.GRU`` (whose fused kernel has no vmap rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from meta_rl.agents.policies import diagonal_gaussian, generator_device, init_mlp_, mlp


def is_recurrent(policy: nn.Module) -> bool:
    """Whether ``policy`` follows the recurrent protocol above (it defines ``initial_state``)."""
    return callable(getattr(policy, "initial_state", None))


class GRUPolicy(nn.Module):
    """GRU over the observation sequence, then an MLP head: Gaussian or categorical actions.

    ``hidden_sizes[0]`` is the GRU's state size, ``hidden_sizes[1:]`` the head's hidden layers.
    Gaussian actions have a state-independent log-std, as ``GaussianMLPPolicy``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (32,),
        *,
        discrete: bool = False,
        activation: str = "tanh",
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("hidden_sizes must hold at least the GRU state size")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.hidden_size = int(hidden_sizes[0])
        self.discrete = discrete
        self.init_std = init_std
        self.input_gates = nn.Linear(obs_dim, 3 * self.hidden_size)
        self.hidden_gates = nn.Linear(self.hidden_size, 3 * self.hidden_size)
        self.head = mlp(self.hidden_size, action_dim, hidden_sizes[1:], activation)
        self.log_std = None if discrete else nn.Parameter(torch.empty(action_dim))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GRU weights U(-1/sqrt(H), 1/sqrt(H)) as ``nn.GRU``; the head as the MLP policies."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        device = generator_device(generator)
        for layer in (self.input_gates, self.hidden_gates):
            for p in (layer.weight, layer.bias):
                draw = torch.empty(p.shape, dtype=p.dtype, device=device)
                p.copy_(draw.uniform_(-bound, bound, generator=generator))
        init_mlp_(self.head, generator)
        if self.log_std is not None:
            self.log_std.fill_(math.log(self.init_std))

    def initial_state(self, batch_shape: Sequence[int]) -> Tensor:
        weight = self.hidden_gates.weight
        return weight.new_zeros((*batch_shape, self.hidden_size))

    def forward(self, obs: Tensor, state: Tensor) -> tuple[Distribution, Tensor]:
        gates_x = self.input_gates(obs)  # all time steps in one matmul
        outputs = []
        for t in range(obs.shape[0]):
            x_r, x_z, x_n = gates_x[t].chunk(3, dim=-1)
            h_r, h_z, h_n = self.hidden_gates(state).chunk(3, dim=-1)
            reset = torch.sigmoid(x_r + h_r)
            update = torch.sigmoid(x_z + h_z)
            candidate = torch.tanh(x_n + reset * h_n)
            state = (1.0 - update) * candidate + update * state
            outputs.append(state)
        out = self.head(torch.stack(outputs))
        if self.log_std is None:
            return Categorical(logits=out, validate_args=False), state
        return diagonal_gaussian(out, self.log_std), state
