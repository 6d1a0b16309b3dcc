"""Policies: plain ``nn.Module``s mapping observations to action distributions.

How the meta-learners and samplers call a policy (``meta_rl.functional``): with per-task
parameters through ``torch.func.functional_call(policy, params, (obs,))`` under
``torch.func.vmap`` over a leading task dimension; with one parameter set shared by every task
(the pre-adaptation batch) as one plain ``policy(obs)`` call. A plain ``GaussianMLPPolicy`` is
the exception that does not go through ``forward``: ``meta_rl.algorithms.closed_form`` reads its
layer structure and evaluates it as batched matrix products (per-task sampling always, the
meta-update's derivatives with ``algo.analytic``). So everything here is a pure function of the
registered parameters: no buffers that change, no in-place updates, distributions built with
``validate_args=False`` (argument validation does data-dependent control flow, which vmap
rejects).

Initialisation follows pytorch-maml-rl (and the original MAML rllab code): Xavier-uniform
weights, zero biases, ``log_std = log(init_std)``. It is drawn through an explicit
``torch.Generator`` so a run is reproducible without touching the global RNG; the draw is made on
the generator's device and copied in, so the same seed gives the same policy on CPU and GPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from meta_rl.agents.choices import Activation


class Tanh(nn.Module):
    """``tanh`` that takes the cheaper road in inference.

    Without autograd (the samplers run the policy in ``torch.inference_mode``) it computes
    ``2 * sigmoid(2x) - 1``, the same function with a faster forward on CPU. With autograd on it
    keeps ``torch.tanh``, whose double backward and jvp / vjp-of-jvp are cheaper than the sigmoid
    form's, and those derivatives dominate the meta-update (measurements in
    ``benchmarks/RESULTS.md``). The two differ only by float rounding.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return torch.tanh(x)
        return 2.0 * torch.sigmoid(2.0 * x) - 1.0


ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module by name (config files name activations as strings)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; known: {known}") from None


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers with ``activation`` between them and none after the output layer."""
    sizes = [in_dim, *hidden_sizes, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(get_activation(activation))
    return nn.Sequential(*layers)


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where draws from ``generator`` are made (the global CPU RNG when it is None)."""
    return torch.device("cpu") if generator is None else generator.device


def diagonal_gaussian(mean: Tensor, log_std: Tensor) -> Distribution:
    """``Independent(Normal(mean, exp(log_std)), 1)``, unvalidated (vmap-safe), as every
    Gaussian policy here builds its action distribution."""
    normal = Normal(mean, log_std.exp().expand_as(mean), validate_args=False)
    return Independent(normal, 1, validate_args=False)


@torch.no_grad()
def init_mlp_(net: nn.Sequential, generator: torch.Generator | None = None) -> None:
    """Xavier-uniform weights and zero biases, drawn from ``generator`` (global RNG if None)."""
    device = generator_device(generator)
    for layer in net:
        if isinstance(layer, nn.Linear):
            fan_out, fan_in = layer.weight.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = torch.empty(layer.weight.shape, dtype=layer.weight.dtype, device=device)
            layer.weight.copy_(w.uniform_(-bound, bound, generator=generator))
            layer.bias.zero_()


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian with an MLP mean and a state-independent log-std (MAML paper policy).

    ``forward(obs[..., obs_dim])`` returns ``Independent(Normal(mean, std), 1)``, so ``log_prob``
    has the batch shape of ``obs`` without its last dim. ``std`` is floored at ``min_std`` so the
    log-std cannot run off to -inf during adaptation.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        min_std: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if init_std <= 0 or min_std <= 0:
            raise ValueError(f"init_std and min_std must be > 0, got {init_std}, {min_std}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.init_std = init_std
        self.min_log_std = math.log(min_std)
        self.mean_net = mlp(obs_dim, act_dim, hidden_sizes, activation)
        self.log_std = nn.Parameter(torch.empty(act_dim))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the initial parameters from ``generator`` (reproducible, no global RNG)."""
        init_mlp_(self.mean_net, generator)
        self.log_std.fill_(math.log(self.init_std))

    def forward(self, obs: Tensor) -> Distribution:
        return diagonal_gaussian(self.mean_net(obs), self.log_std.clamp(min=self.min_log_std))


class CategoricalMLPPolicy(nn.Module):
    """Categorical over ``num_actions`` with MLP logits (bandits, tabular MDPs)."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.logits_net = mlp(obs_dim, num_actions, hidden_sizes, activation)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the initial parameters from ``generator`` (reproducible, no global RNG)."""
        init_mlp_(self.logits_net, generator)

    def forward(self, obs: Tensor) -> Distribution:
        return Categorical(logits=self.logits_net(obs), validate_args=False)


def flat_dim(space: gym.Space, role: str) -> int:
    """Width of a 1-D Box or a Discrete space: a network's input for observations (the sampler
    one-hot encodes Discrete ones), the number of actions or action dims for actions."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    raise ValueError(f"unsupported {role} space {space!r}: expected a 1-D Box or a Discrete")


def make_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    hidden_sizes: Sequence[int] = (100, 100),
    activation: str = "relu",
    init_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """The policy class that fits the spaces: Box actions -> Gaussian, Discrete -> Categorical."""
    obs_dim = flat_dim(observation_space, "observation")
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        act_dim = int(action_space.shape[0])
        return GaussianMLPPolicy(
            obs_dim, act_dim, hidden_sizes, activation, init_std, generator=generator
        )
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(
            obs_dim, int(action_space.n), hidden_sizes, activation, generator=generator
        )
    raise ValueError(f"unsupported action space {action_space!r}: expected a 1-D Box or Discrete")
