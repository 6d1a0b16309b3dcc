"""Run any policy module with its own parameter set per task, in one call.

The meta-learners never look inside a policy: they evaluate it through
``torch.func.functional_call`` with a ``dict[str, Tensor]`` of parameters, vmapped over a
leading task dimension. That is the "model-agnostic" claim made literal: any ``nn.Module``
whose ``forward(obs)`` returns a ``torch.distributions.Distribution`` works unchanged.
Nothing here knows a particular policy. A faster per-task forward for one kind of policy is a
``TaskForward`` handed to whoever runs it (a sampler, an adaptation strategy):
``meta_rl.algorithms.closed_form.task_forward`` runs the paper's plain ``GaussianMLPPolicy`` as
batched matrix products, with the same distributions and without vmap's per-call overhead.

Recurrent policies (the protocol in ``agents/recurrent.py``) work too: the functions below that
take whole ``obs`` read each task's first remaining dim as time and run the sequence from the
policy's ``initial_state``; ``task_step`` is the per-step call a sampler makes with a state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, kl_divergence
from torch.func import functional_call, vmap

from meta_rl.agents.recurrent import is_recurrent

Params = dict[str, Tensor]
# (policy, per-task params, obs, task_dim) -> distribution: ``task_distribution`` or a faster twin
TaskForward = Callable[[nn.Module, Params, Tensor, int], Distribution]


def policy_params(policy: nn.Module) -> Params:
    """The policy's trainable parameters as a name -> tensor dict."""
    return {name: p for name, p in policy.named_parameters() if p.requires_grad}


def expand_to_tasks(params: Params, num_tasks: int) -> Params:
    """View shared parameters as per-task ones (no copy; gradients flow back to the shared)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}


def _distribution(policy: nn.Module, params: Params, obs: Tensor) -> Distribution:
    """The policy's distribution on ``obs``; a recurrent one reads dim 0 as time from its start."""
    if is_recurrent(policy):
        state = policy.initial_state(obs.shape[1:-1])
        return functional_call(policy, params, (obs, state))[0]
    return functional_call(policy, params, (obs,))


def flatten_distribution(
    dist: Distribution,
) -> tuple[list[Tensor], Callable[[list[Tensor]], Distribution]]:
    """Split a distribution into its parameter tensors and a function that rebuilds it.

    ``vmap`` only returns tensors, so a distribution computed per task leaves vmap as its
    parameters and is rebuilt outside with the task dimension in its batch shape.
    """
    if isinstance(dist, Independent):
        leaves, rebuild_base = flatten_distribution(dist.base_dist)
        ndims = dist.reinterpreted_batch_ndims
        return leaves, lambda ts: Independent(rebuild_base(ts), ndims, validate_args=False)
    state = vars(dist)
    names = [name for name in dist.arg_constraints if name in state]
    if "logits" in names and "probs" in names:  # lazily cached twin: keep one parametrisation
        names.remove("probs")
    if not names:
        raise TypeError(
            f"cannot batch {type(dist).__name__} over tasks: it exposes no parameters in "
            "arg_constraints; return a Normal, Categorical, Independent, ... from forward()"
        )
    cls = type(dist)
    if isinstance(dist, Categorical) and names == ["logits"]:
        return [state["logits"]], _categorical_from_normalized_logits
    return [state[n] for n in names], lambda ts: cls(
        **dict(zip(names, ts, strict=True)), validate_args=False
    )


def _categorical_from_normalized_logits(leaves: list[Tensor]) -> Categorical:
    """A ``Categorical`` whose logits are ``leaves[0]`` (normalised already), bit for bit.

    The constructor subtracts the logsumexp again, which is not idempotent in floating point:
    each rebuild would move the log-probabilities by a last bit, and samplers that rebuild a
    different number of times (one-task shards) would disagree. The value is kept; the
    normalisation's derivatives are kept too (the KL Hessian of the meta-update needs them)."""
    (logits,) = leaves
    dist = Categorical(logits=logits, validate_args=False)
    renormalized = dist.logits
    dist.logits = dist._param = logits.detach() + (renormalized - renormalized.detach())
    return dist


def task_distribution(
    policy: nn.Module, params: Params, obs: Tensor, task_dim: int
) -> Distribution:
    """The policy's action distribution with ``params[k][i]`` applied to task ``i``.

    ``obs`` holds the task index in dimension ``task_dim``; the returned distribution has the
    batch shape of ``obs`` without its last (feature) dimension.
    """
    if obs.dim() >= 3 and not torch.is_grad_enabled() and not is_recurrent(policy):
        shared = shared_params(params)
        if shared is not None:
            return _one_call_for_all_tasks(policy, shared, obs, task_dim)
    rebuild: list[Callable[[list[Tensor]], Distribution]] = []

    def leaves(task_params: Params, task_obs: Tensor) -> tuple[Tensor, ...]:
        tensors, rebuild_fn = flatten_distribution(_distribution(policy, task_params, task_obs))
        rebuild.append(rebuild_fn)
        return tuple(tensors)

    tensors = vmap(leaves, in_dims=(0, task_dim), out_dims=task_dim)(params, obs)
    return rebuild[0](list(tensors))


def shared_params(params: Params) -> Params | None:
    """The one parameter set every task holds, else None.

    An ``expand_to_tasks`` view (stride 0 over tasks) is shared by construction. Other CPU
    tensors are compared by value (a worker's shard arrives as a copy); on a GPU that
    comparison would be a host round trip per call, so only views count there.
    """
    first = {k: v[0] for k, v in params.items()}
    if all(_shared_by(v, first[k]) for k, v in params.items()):
        return first
    return None


def shared_as_views(params: Params) -> Params:
    """``params`` with a value-shared set replaced by stride-0 views of it.

    For a caller about to run many steps: the value comparison happens once here, and every
    later ``shared_params`` check recognises the views by their stride alone.
    """
    shared = shared_params(params)
    if shared is None:
        return params
    return expand_to_tasks(shared, next(iter(params.values())).shape[0])


def _shared_by(stacked: Tensor, first: Tensor) -> bool:
    if stacked.stride(0) == 0:
        return True
    return stacked.device.type == "cpu" and torch.equal(stacked, first.expand_as(stacked))


def _are_own_parameters(module: nn.Module, params: Params) -> bool:
    """True when ``params`` are the module's own parameter tensors (same memory and layout)."""
    own = dict(module.named_parameters())
    return all(
        name in own
        and value.data_ptr() == own[name].data_ptr()
        and value.shape == own[name].shape
        and value.stride() == own[name].stride()
        and value.dtype == own[name].dtype
        for name, value in params.items()
    )


def _one_call_for_all_tasks(
    policy: nn.Module, params: Params, obs: Tensor, task_dim: int
) -> Distribution:
    """``task_distribution`` when all tasks share ``params``: one plain call, no vmap.

    Sampling the pre-adaptation batch is this case; vmap's per-call overhead is about as large
    as the small per-step forward itself. The task dim is merged into the next one, so the
    policy sees inputs of the rank a per-task call would.
    """
    per_task = obs.movedim(task_dim, 0)
    num_tasks, rows = per_task.shape[:2]
    inputs = per_task.reshape(num_tasks * rows, *per_task.shape[2:])
    if _are_own_parameters(policy, params):  # the usual case: skip functional_call's swaps
        dist = policy(inputs)
    else:
        dist = functional_call(policy, params, (inputs,))
    tensors, rebuild = flatten_distribution(dist)
    return rebuild([t.reshape(num_tasks, rows, *t.shape[1:]).movedim(0, task_dim) for t in tensors])


def task_log_probs(
    policy: nn.Module, params: Params, obs: Tensor, actions: Tensor, task_dim: int
) -> Tensor:
    """Log-probabilities of ``actions`` under each task's parameters (one vmapped call)."""

    def log_prob(task_params: Params, task_obs: Tensor, task_actions: Tensor) -> Tensor:
        return _distribution(policy, task_params, task_obs).log_prob(task_actions)

    return vmap(log_prob, in_dims=(0, task_dim, task_dim), out_dims=task_dim)(params, obs, actions)


def task_kl(
    policy: nn.Module, old_params: Params, new_params: Params, obs: Tensor, task_dim: int
) -> Tensor:
    """KL(pi_old || pi_new) per observation, each task with its own pair of parameter sets."""

    def kl(old: Params, new: Params, task_obs: Tensor) -> Tensor:
        old_dist = _distribution(policy, old, task_obs)
        new_dist = _distribution(policy, new, task_obs)
        if isinstance(old_dist, Categorical) and isinstance(new_dist, Categorical):
            # torch's Categorical KL masks with a boolean index, which vmap cannot batch;
            # its logits are normalised log-probabilities, so this is the same KL
            return (old_dist.probs * (old_dist.logits - new_dist.logits)).sum(-1)
        return kl_divergence(old_dist, new_dist)

    return vmap(kl, in_dims=(0, 0, task_dim), out_dims=task_dim)(old_params, new_params, obs)


def task_step(
    policy: nn.Module, params: Params, obs: Tensor, state: Tensor
) -> tuple[Distribution, Tensor]:
    """One time step of a recurrent policy, each task (dim 0) with its own parameters.

    ``obs[N, *B, D]`` and ``state[N, *B, H]`` -> the action distribution, batch shape
    ``[N, 1, *B]`` (the protocol's length-1 time dim kept), and the next state ``[N, *B, H]``.
    """
    rebuild: list[Callable[[list[Tensor]], Distribution]] = []

    def step(task_params: Params, task_obs: Tensor, task_state: Tensor):
        dist, next_state = functional_call(policy, task_params, (task_obs.unsqueeze(0), task_state))
        tensors, rebuild_fn = flatten_distribution(dist)
        rebuild.append(rebuild_fn)
        return tuple(tensors), next_state

    tensors, next_state = vmap(step)(params, obs, state)
    return rebuild[0](list(tensors)), next_state
