"""Policies: log-probs against hand-built distributions, functional/vmapped use, derivatives."""

from __future__ import annotations

import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from meta_rl.agents.policies import (
    ACTIVATIONS,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    Tanh,
    get_activation,
    make_policy,
)

HIDDEN = (8, 7)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(activation: str = "tanh", seed: int = 0, **kw) -> GaussianMLPPolicy:
    return GaussianMLPPolicy(3, 2, HIDDEN, activation, generator=gen(seed), **kw)


def categorical(activation: str = "relu", seed: int = 0) -> CategoricalMLPPolicy:
    return CategoricalMLPPolicy(4, 5, HIDDEN, activation, generator=gen(seed))


def perturbed(policy: nn.Module, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """The policy's parameters plus noise (so log_std and biases are not at their init)."""
    g = gen(seed)
    return {
        k: v.detach() + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)
        for k, v in policy.named_parameters()
    }


def hand_mlp(x: torch.Tensor, net: nn.Sequential, act) -> torch.Tensor:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        x = x @ lin.weight.T + lin.bias
        if i < len(linears) - 1:
            x = act(x)
    return x


# --- activations ---------------------------------------------------------------------------


def test_activation_registry_builds_each_and_rejects_unknown():
    x = torch.linspace(-3, 3, 13)
    for name in ACTIVATIONS:
        assert isinstance(get_activation(name), nn.Module)
    torch.testing.assert_close(get_activation("relu")(x), x.clamp(min=0))
    torch.testing.assert_close(get_activation("sigmoid")(x), torch.sigmoid(x))
    with pytest.raises(ValueError, match="'swishy'"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="'swishy'"):
        GaussianMLPPolicy(3, 2, activation="swishy")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_equals_torch_tanh_with_and_without_grad(dtype):
    x = torch.linspace(-20, 20, 2001, dtype=dtype)
    tanh = Tanh()
    with torch.no_grad():
        fast = tanh(x)
    torch.testing.assert_close(fast, 2 * torch.sigmoid(2 * x) - 1, rtol=0, atol=0)
    torch.testing.assert_close(fast, torch.tanh(x))
    assert fast.abs().max() <= 1
    xr = x.clone().requires_grad_()
    y = tanh(xr)
    torch.testing.assert_close(y, torch.tanh(x))
    (g,) = torch.autograd.grad(y.sum(), xr)
    torch.testing.assert_close(g, 1 - torch.tanh(x) ** 2)


# --- distributions against hand-built ones -----------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_log_prob_matches_hand_built_normal(activation, dtype):
    policy = gaussian(activation).to(dtype)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    g = gen(1)
    obs = torch.randn(5, 4, 3, generator=g, dtype=dtype)  # extra batch dims are kept
    act = torch.randn(5, 4, 2, generator=g, dtype=dtype)
    dist = policy(obs)
    mean = hand_mlp(obs, policy.mean_net, torch.tanh if activation == "tanh" else torch.relu)
    std = torch.tensor([-0.5, 0.3], dtype=dtype).exp()
    expected = torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
    assert dist.log_prob(act).shape == (5, 4)
    assert dist.log_prob(act).dtype == dtype
    torch.testing.assert_close(dist.log_prob(act), expected)
    torch.testing.assert_close(dist.mean, mean)
    torch.testing.assert_close(dist.stddev, std.expand_as(mean))
    # and the closed form, once, in case Normal and the policy share a mistake
    z = (act - mean) / std
    closed = (-0.5 * z**2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(dist.log_prob(act), closed)


def test_gaussian_std_is_floored_at_min_std():
    policy = gaussian(min_std=1e-3)
    with torch.no_grad():
        policy.log_std.fill_(-50.0)
    torch.testing.assert_close(policy(torch.zeros(3)).stddev, torch.full((2,), 1e-3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_categorical_log_prob_matches_log_softmax(dtype):
    policy = categorical().to(dtype)
    obs = torch.eye(4, dtype=dtype).repeat(3, 1).view(3, 4, 4)
    act = torch.arange(12).view(3, 4) % 5
    logits = hand_mlp(obs, policy.logits_net, torch.relu)
    expected = torch.log_softmax(logits, -1).gather(-1, act[..., None])[..., 0]
    lp = policy(obs).log_prob(act)
    assert lp.shape == (3, 4) and lp.dtype == dtype
    torch.testing.assert_close(lp, expected)


# --- initialisation ----------------------------------------------------------------------


def test_reset_parameters_is_reproducible_and_xavier():
    a, b, c = gaussian(seed=3), gaussian(seed=3), gaussian(seed=4)
    for (k, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
        if k.endswith("weight"):
            assert not torch.equal(pa, pc)
            fan_out, fan_in = pa.shape
            assert pa.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
            assert pa.std() > 0.4 * math.sqrt(2 / (fan_in + fan_out))
        elif k.endswith("bias"):
            assert torch.all(pa == 0)
    torch.testing.assert_close(a.log_std, torch.zeros(2))  # log(init_std = 1)
    # reset brings a trained-away policy back to the same draw
    with torch.no_grad():
        for p in c.parameters():
            p.add_(1.0)
    c.reset_parameters(gen(3))
    for pa, pc in zip(a.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(pa, pc, rtol=0, atol=0)
    d = categorical(seed=5)
    d.reset_parameters(gen(5))
    torch.testing.assert_close(d.logits_net[0].weight, categorical(seed=5).logits_net[0].weight)


def test_init_std_sets_log_std():
    policy = GaussianMLPPolicy(3, 2, HIDDEN, init_std=0.5, generator=gen(0))
    torch.testing.assert_close(policy(torch.zeros(3)).stddev, torch.full((2,), 0.5))


# --- functional and vmapped use --------------------------------------------------------


def dist_tensors(policy, params, obs, act):
    dist = functional_call(policy, params, (obs,))
    if isinstance(policy, GaussianMLPPolicy):
        return dist.mean, dist.stddev, dist.log_prob(act)
    return dist.logits, dist.log_prob(act)


def policy_and_data(kind: str, K: int, B: int = 6):
    g = gen(11)
    if kind == "gaussian":
        policy = gaussian("tanh").double()
        obs = torch.randn(K, B, 3, generator=g, dtype=torch.float64)
        act = torch.randn(K, B, 2, generator=g, dtype=torch.float64)
    else:
        policy = categorical("relu").double()
        obs = torch.randn(K, B, 4, generator=g, dtype=torch.float64)
        act = torch.randint(0, 5, (K, B), generator=g)
    return policy, obs, act


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_functional_call_equals_forward(kind):
    policy, obs, act = policy_and_data(kind, K=1)
    params = dict(policy.named_parameters())
    dist = policy(obs[0])
    got = dist_tensors(policy, params, obs[0], act[0])
    assert torch.equal(got[-1], dist.log_prob(act[0]))
    # other parameters: same as a module that holds them
    new = perturbed(policy, seed=12)
    other = policy_and_data(kind, K=1)[0]
    other.load_state_dict(new)
    expected = dist_tensors(other, dict(other.named_parameters()), obs[0], act[0])
    for a, b in zip(got, dist_tensors(policy, new, obs[0], act[0]), strict=True):
        assert a.shape == b.shape
    for a, b in zip(dist_tensors(policy, new, obs[0], act[0]), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # functional_call did not write into the module
    assert torch.equal(policy(obs[0]).log_prob(act[0]), dist.log_prob(act[0]))


@pytest.mark.parametrize("grad_enabled", [True, False])
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_vmap_over_stacked_params_equals_loop(kind, grad_enabled):
    K = 3
    policy, obs, act = policy_and_data(kind, K)
    per_task = [perturbed(policy, seed=20 + k) for k in range(K)]
    stacked = {k: torch.stack([p[k] for p in per_task]) for k in per_task[0]}
    with torch.set_grad_enabled(grad_enabled):
        batched = vmap(lambda p, o, a: dist_tensors(policy, p, o, a))(stacked, obs, act)
        for k in range(K):
            looped = dist_tensors(policy, per_task[k], obs[k], act[k])
            for b, lo in zip(batched, looped, strict=True):
                torch.testing.assert_close(b[k], lo)


def test_vmap_works_with_stack_module_state():
    # the torch.func recipe for an ensemble of independent modules
    policies = [gaussian("relu", seed=s) for s in range(3)]
    params, _ = stack_module_state(policies)
    obs = torch.randn(3, 4, 3, generator=gen(0))
    means = vmap(lambda p, o: functional_call(policies[0], p, (o,)).mean)(params, obs)
    for k, pol in enumerate(policies):
        torch.testing.assert_close(means[k], pol(obs[k]).mean)


def maml_objective(policy, theta, data, lr, create_graph):
    """Sum over tasks of the outer loss after one vmapped inner policy-gradient step."""
    obs_in, act_in, adv_in, obs_out, act_out, adv_out = data
    K = obs_in.shape[0]

    def task_losses(params, obs, act, adv):
        log_prob = vmap(lambda p, o, a: functional_call(policy, p, (o,)).log_prob(a))(
            params, obs, act
        )
        return -(log_prob * adv).mean(-1)  # [K]

    stacked = {k: v.expand(K, *v.shape) for k, v in theta.items()}
    inner = task_losses(stacked, obs_in, act_in, adv_in).sum()
    grads = torch.autograd.grad(inner, list(stacked.values()), create_graph=create_graph)
    adapted = {k: v - lr * g for (k, v), g in zip(stacked.items(), grads, strict=True)}
    return task_losses(adapted, obs_out, act_out, adv_out).sum(), grads


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_double_backward_through_vmapped_adaptation_matches_finite_differences(kind):
    K = 2
    policy, obs_in, act_in = policy_and_data(kind, K)
    _, obs_out, act_out = policy_and_data(kind, K, B=5)
    obs_out, act_out = obs_out + 0.1, act_out.flip(0)
    g = gen(30)
    data = (
        obs_in, act_in, torch.randn(K, 6, generator=g, dtype=torch.float64),
        obs_out, act_out, torch.randn(K, 5, generator=g, dtype=torch.float64),
    )  # fmt: skip
    theta0 = perturbed(policy, seed=31)
    u = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in theta0.items()}
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in theta0.items()}
    lr = 0.5

    theta = {k: t.clone().requires_grad_() for k, t in theta0.items()}
    outer, inner_grads = maml_objective(policy, theta, data, lr, create_graph=True)
    meta_grad = torch.autograd.grad(outer, list(theta.values()), create_graph=True)
    gv = sum((gk * v[k]).sum() for gk, k in zip(meta_grad, theta, strict=True))
    hv = torch.autograd.grad(gv, list(theta.values()))

    # the vmapped inner gradients are the per-task gradients of a loop
    for k in range(K):
        p = {n: t.clone().requires_grad_() for n, t in theta0.items()}
        lp = functional_call(policy, p, (obs_in[k],)).log_prob(act_in[k])
        gk = torch.autograd.grad(-(lp * data[2][k]).mean(), list(p.values()))
        for a, b in zip(inner_grads, gk, strict=True):
            torch.testing.assert_close(a[k], b)

    def along(d: dict, s: float) -> dict:
        return {k: (theta0[k] + s * d[k]).requires_grad_() for k in theta0}

    def f(params):
        return maml_objective(policy, params, data, lr, create_graph=True)[0]

    def grad_dot_v(params):
        mg = torch.autograd.grad(f(params), list(params.values()))
        return sum((gk * v[k]).sum() for gk, k in zip(mg, params, strict=True))

    eps = 1e-5
    fd_grad = (f(along(u, eps)) - f(along(u, -eps))) / (2 * eps)
    an_grad = sum((gk * u[k]).sum() for gk, k in zip(meta_grad, theta, strict=True))
    torch.testing.assert_close(an_grad.detach(), fd_grad.detach(), rtol=1e-6, atol=1e-8)
    fd_hv = (grad_dot_v(along(u, eps)) - grad_dot_v(along(u, -eps))) / (2 * eps)
    an_hv = sum((h * u[k]).sum() for h, k in zip(hv, theta, strict=True))
    torch.testing.assert_close(an_hv, fd_hv.detach(), rtol=1e-5, atol=1e-7)
    assert an_hv.abs() > 1e-3  # a real third-order term, not an identically zero one


# --- make_policy ---------------------------------------------------------------------


def test_make_policy_picks_class_and_dims():
    box_obs = gym.spaces.Box(-1, 1, (17,), np.float32)
    p = make_policy(box_obs, gym.spaces.Box(-1, 1, (6,), np.float32), (16,), "tanh", 0.7)
    assert isinstance(p, GaussianMLPPolicy) and (p.obs_dim, p.act_dim) == (17, 6)
    torch.testing.assert_close(p(torch.zeros(17)).stddev, torch.full((6,), 0.7))
    assert isinstance(p.mean_net[1], Tanh) and p.mean_net[0].out_features == 16
    q = make_policy(gym.spaces.Discrete(10), gym.spaces.Discrete(5), (16,), "relu", 1.0)
    assert isinstance(q, CategoricalMLPPolicy) and (q.obs_dim, q.num_actions) == (10, 5)
    assert q(torch.eye(10)).logits.shape == (10, 5)
    a = make_policy(box_obs, gym.spaces.Discrete(3), (4,), "relu", 1.0, generator=gen(1))
    b = make_policy(box_obs, gym.spaces.Discrete(3), (4,), "relu", 1.0, generator=gen(1))
    assert torch.equal(a.logits_net[0].weight, b.logits_net[0].weight)


@pytest.mark.parametrize(
    ("obs_space", "act_space", "bad"),
    [
        (gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([2, 3]), "MultiDiscrete"),
        (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2, 2)), "action space Box"),
        (gym.spaces.Box(-1, 1, (4, 4)), gym.spaces.Discrete(2), "observation space Box"),
        (gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), gym.spaces.Discrete(2), "Dict"),
    ],
)
def test_make_policy_rejects_unsupported_spaces(obs_space, act_space, bad):
    with pytest.raises(ValueError, match=bad):
        make_policy(obs_space, act_space, (4,), "relu", 1.0)


def test_agents_does_not_import_meta_rl():
    """Imports flow meta_rl -> agents -> envs: agents pulls in no learner, sampler or trainer."""
    code = (
        "import sys, meta_rl.agents\n"
        "inner = ('meta_rl', 'meta_rl.agents', 'meta_rl.envs')\n"
        "sys.exit(any(m.startswith('meta_rl') and not m.startswith(inner[1:]) and m not in inner"
        " for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
