"""HalfCheetah families on MuJoCo XLA (MJX): the whole batch stepped by one jitted function.

``train.sampler: mjx`` runs ``TorchSampler`` (the torch-native sampler) over an
``MJXHalfCheetah``: every sub-env of every task is one row of a batched ``mjx.Data`` on the
device JAX runs on, ``frame_skip`` physics steps plus the family's observation and reward are
one compiled call, and actions, observations and rewards cross between torch and JAX through
DLPack, which shares the buffer on the same device. With torch and JAX both on one GPU, a whole
MAML-TRPO iteration (sampling, inner step, meta-update) stays on it. On CPU it runs too (the
tests run it there), far slower than ``train.sampler: mujoco``.

Why MJX and not MuJoCo Warp: MJX is released with MuJoCo under the same version, so it runs
with the ``mujoco==3.3.0`` that Meta-World pins: one install and one constraints file.
MuJoCo Warp needs ``mujoco>=3.4``. Which of the two is faster on these models was not measured
(no GPU has been lent to this project's sessions).

Why only HalfCheetah: for the Ant, MJX 3.3.0's collision pipeline finds other contacts than C
MuJoCo (a contact present in one and not the other, with a margin of 0.01), so single steps
from the same state differ by up to ~1 in velocity even in float64 (``benchmarks/RESULTS.md``).
A family whose physics the backend does not reproduce is refused, not approximated.

Semantics are ``envs.half_cheetah`` (v5 observations, the family's ``task_reward``, control
cost), in JAX's default float32; reset noise comes from the sampler's ``torch.Generator``,
as for the other torch-native families, so a batch matches ``VectorSampler``'s in
distribution, not draw for draw. ``tests/test_mjx.py`` bounds the per-step difference to C
MuJoCo along a trajectory.
"""

from __future__ import annotations

import os

# JAX takes 75 % of a GPU's memory at its first use unless told otherwise: torch shares it here
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import torch
from mujoco import mjx
from torch import Tensor

from meta_rl.envs.base import task_to_arrays
from meta_rl.envs.half_cheetah import HalfCheetahTaskEnv
from meta_rl.samplers.mujoco import check_batchable
from meta_rl.samplers.torch_native import BatchedEnv


def jax_device(device: torch.device) -> jax.Device:
    """The JAX device that shares memory with a torch device (``cuda:i`` -> GPU ``i``)."""
    kind = "gpu" if device.type == "cuda" else "cpu"
    try:
        devices = jax.devices(kind)
    except RuntimeError:
        devices = []
    if not devices:
        raise ValueError(
            f"train.sampler mjx on {device}: JAX sees no {kind} device "
            "(on a GPU, install jax[cuda12] next to meta-rl[mjx])"
        )
    return devices[device.index or 0]


def to_jax(tensor: Tensor) -> jax.Array:
    return jax.dlpack.from_dlpack(tensor.contiguous())


def to_torch(array: jax.Array) -> Tensor:
    return torch.from_dlpack(array)


class MJXHalfCheetah(BatchedEnv):
    """A HalfCheetah family (``HalfCheetahTaskEnv`` with its ``task_reward``) as one MJX batch.

    The compiled functions hold only the physics and the observation, so every instance of
    a family (and every HalfCheetah family: one model) with the same batch size reuses one
    compilation; the reward is the family's own ``task_reward`` on torch tensors.
    """

    def __init__(self, env: gym.Env, device: torch.device) -> None:
        super().__init__(env, device)
        if check_batchable(env) is not HalfCheetahTaskEnv:
            name = type(self.unwrapped).__name__
            raise ValueError(
                f"sampler 'mjx' steps HalfCheetah families only; {name}: MJX 3.3.0's contacts "
                "differ from MuJoCo's for the Ant (use sampler mujoco)"
            )
        base = self.family = self.unwrapped
        self.model = mjx.put_model(base.model, device=jax_device(device))
        self.init_qpos = torch.as_tensor(base.init_qpos, dtype=torch.float32, device=device)
        self.init_qvel = torch.as_tensor(base.init_qvel, dtype=torch.float32, device=device)
        self.noise_scale = float(base._reset_noise_scale)
        self.frame_skip, self.dt = int(base.frame_skip), float(base.dt)
        self.obs_skip = 1 if base._exclude_current_positions_from_observation else 0
        self.task: dict[str, Tensor] = {}
        self.data: mjx.Data | None = None
        self.x_position = torch.zeros(0, device=device)

    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        arrays = [task_to_arrays(task, self.family.task_space) for task in tasks]
        self.task = {
            key: torch.tensor([float(a[key]) for a in arrays], device=self.device)
            for key in arrays[0]
        }

    def reset(self, generator: torch.Generator) -> Tensor:
        """``MujocoEnv.reset``'s noise, drawn for the whole batch from ``generator``."""
        batch = len(next(iter(self.task.values())))
        kwargs = {"generator": generator, "device": self.device}
        scale = self.noise_scale
        uniform = torch.rand(batch, len(self.init_qpos), **kwargs) * (2 * scale) - scale
        normal = torch.randn(batch, len(self.init_qvel), **kwargs)
        return self.set_state(self.init_qpos + uniform, self.init_qvel + scale * normal)

    def set_state(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        """Put each row in the given state (``MujocoEnv.set_state``); its observations."""
        qpos, qvel = to_jax(qpos.float()), to_jax(qvel.float())
        self.data, obs = _reset_batch(self.model, qpos, qvel, skip=self.obs_skip)
        self.x_position = to_torch(self.data.qpos)[:, 0]
        return to_torch(obs)

    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``HalfCheetahTaskEnv.step`` for every row: physics in JAX, the reward in torch."""
        self.data, obs = _step_batch(
            self.model, self.data, to_jax(action), frame_skip=self.frame_skip, skip=self.obs_skip
        )
        qpos = to_torch(self.data.qpos)
        x_velocity = (qpos[:, 0] - self.x_position) / self.dt
        self.x_position = qpos[:, 0]
        forward, _ = self.family.task_reward(x_velocity, qpos, self.task)
        reward = forward - self.family._ctrl_cost_weight * action.square().sum(dim=-1)
        return to_torch(obs), reward, torch.zeros_like(reward, dtype=torch.bool)


def _observe(data: mjx.Data, skip: int) -> jax.Array:
    """v5 HalfCheetah's ``_get_obs`` for every row (``skip`` leading positions left out)."""
    return jnp.concatenate([data.qpos[:, skip:], data.qvel], axis=1)


@partial(jax.jit, static_argnames=("skip",))
def _reset_batch(
    model: mjx.Model, qpos: jax.Array, qvel: jax.Array, *, skip: int
) -> tuple[mjx.Data, jax.Array]:
    def one(q: jax.Array, v: jax.Array) -> mjx.Data:
        return mjx.forward(model, mjx.make_data(model).replace(qpos=q, qvel=v))

    data = jax.vmap(one)(qpos, qvel)
    return data, _observe(data, skip)


@partial(jax.jit, static_argnames=("frame_skip", "skip"))
def _step_batch(
    model: mjx.Model, data: mjx.Data, action: jax.Array, *, frame_skip: int, skip: int
) -> tuple[mjx.Data, jax.Array]:
    """``MujocoEnv.do_simulation`` for every row, then v5's observation."""

    def physics(d: mjx.Data, a: jax.Array) -> mjx.Data:
        d = d.replace(ctrl=a)
        return jax.lax.fori_loop(0, frame_skip, lambda _, x: mjx.step(model, x), d)

    data = jax.vmap(physics)(data, action)
    return data, _observe(data, skip)
