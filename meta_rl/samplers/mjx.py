"""HalfCheetah and Ant families on MuJoCo XLA (MJX): the whole batch stepped by one jitted function.

``train.sampler: mjx`` runs ``TorchSampler`` (the torch-native sampler) over an
``MJXHalfCheetah`` or ``MJXAnt`` (``mjx_batched_env`` picks one): every sub-env of every task
is one row of a batched ``mjx.Data`` on the device JAX runs on, ``frame_skip`` physics steps
plus the family's observation are one compiled call, the reward is the family's own
``task_reward`` on torch tensors, and actions, observations and rewards cross between torch and
JAX through DLPack, which shares the buffer on the same device. With torch and JAX both on one
GPU, a whole MAML-TRPO iteration (sampling, inner step, meta-update) stays on it. On CPU it runs
too (the tests run it there), far slower than ``train.sampler: mujoco``.

Why MJX and not MuJoCo Warp: MJX is released with MuJoCo under the same version, so it runs
with the ``mujoco==3.3.0`` that Meta-World pins: one install and one constraints file.
MuJoCo Warp needs ``mujoco>=3.4``. Which of the two is faster on these models was not measured
(no GPU has been lent to this project's sessions).

## The Ant: what ``mjx.step`` computes differently from C MuJoCo, and ``step_as_c``
From the same states, in float64, one Ant env step of stock ``mjx.step`` lands up to 0.71 away
from C MuJoCo's in qvel (``python -m benchmarks mjx-parity --x64``). The contacts themselves
agree (same geom pairs, dist, pos, normal; MJX's extra candidates with dist > margin have no
force); two things differ:

- The contact frame of a plane-capsule contact. C (``mjc_PlaneCapsule`` then ``mju_makeFrame``)
  takes the capsule axis projected on the plane as the first tangent, however short the
  projection; MJX 3.3.0's ``plane_capsule`` replaces it by (0, 1, 0) when the projection is
  shorter than 0.5, i.e. for a capsule within 30 degrees of the normal, as the Ant's lower legs
  often are. With the pyramidal cone (condim 3) the friction pyramid's edges follow the
  tangents, so the constraint forces differ: ``mj_forward`` and ``mjx.forward`` from one state
  differed by up to 74 in qacc. This is the 0.71.
- What the RK4 integrator leaves in ``mjx.Data``. C leaves the last stage's quantities
  (kinematics, contacts, constraint forces, qacc) next to the advanced state, and the Ant's
  step reads them: ``xpos`` for the velocity, ``cfrc_ext`` from ``mj_rnePostConstraint``;
  ``mjx.rungekutta4`` returns the first stage's (with C's frames: up to 0.05 in the torso's
  ``xpos`` and 97 in ``cfrc_ext`` after one env step, while qvel agrees to 9e-12). It also
  warm-starts each stage's solve from the previous stage, where C warm-starts all four from
  the step's ``qacc_warmstart`` and keeps the last stage's qacc as the next one.

``forward_as_c`` is ``mjx.forward`` with C's plane-capsule frames, built from MJX's public
stages; ``step_as_c`` is ``mj_step`` on it (RK4 as C's ``mj_RungeKutta``, Euler as
``mjx.euler``). The model is not changed: it is C MuJoCo's physics, computed by MJX. From the
same states and actions, in float64, one Ant env step of ``step_as_c`` lands within 1.7e-12
of C's in qvel and 4.2e-12 in ``cfrc_ext`` (``python -m benchmarks mjx-parity --x64``, 100
states). ``MJXHalfCheetah`` keeps stock ``mjx.step`` (Euler): there both land within 7e-11.

Semantics are the families' (v5 observations incl. the Ant's clipped ``cfrc_ext``, the
family's ``task_reward``, control, contact and survive terms, the Ant's termination), in JAX's
default float32; reset noise comes from the sampler's ``torch.Generator``, as for the other
torch-native families, so a batch matches ``VectorSampler``'s in distribution, not draw for
draw. ``tests/test_mjx.py`` bounds the per-step difference to C MuJoCo along a trajectory.
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
import mujoco
import numpy as np
import torch
from mujoco import mjx

# mujoco==3.3.0 is pinned; the position integration has no public name in it
from mujoco.mjx._src import forward as _mjx_forward
from mujoco.mjx._src import scan as _mjx_scan
from torch import Tensor

from meta_rl.envs.ant import AntTaskEnv
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


# --- C MuJoCo's physics on MJX (see the module docstring) ------------------------------------


def _plane_capsule_frames_as_c(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """C's frame for every plane-capsule contact: first tangent = capsule axis on the plane."""
    plane, capsule = d.contact.geom[:, 0], d.contact.geom[:, 1]
    types = jnp.asarray(m.geom_type)
    chosen = (types[plane] == mjx.GeomType.PLANE) & (types[capsule] == mjx.GeomType.CAPSULE)
    normal = d.geom_xmat[plane][:, :, 2]
    axis = d.geom_xmat[capsule][:, :, 2]
    tangent = axis - normal * jnp.sum(normal * axis, axis=1, keepdims=True)
    norm = jnp.linalg.norm(tangent, axis=1, keepdims=True)
    small = norm < mujoco.mjMINVAL  # mju_normalize3 of a null vector gives (1, 0, 0)
    unit_x = jnp.array([1.0, 0.0, 0.0], dtype=tangent.dtype)
    tangent = jnp.where(small, unit_x, tangent / jnp.where(small, 1.0, norm))
    frame = jnp.stack([normal, tangent, jnp.cross(normal, tangent)], axis=1)
    frame = jnp.where(chosen[:, None, None], frame, d.contact.frame)
    return d.replace(contact=d.contact.replace(frame=frame))


def forward_as_c(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """``mjx.forward`` (3.3.0's stages, sensors left out) with C's plane-capsule contact frames."""
    if m.nsensor:
        raise NotImplementedError("forward_as_c computes no sensors")
    for stage in (mjx.kinematics, mjx.com_pos, mjx.camlight, mjx.tendon, mjx.crb, mjx.factor_m):
        d = stage(m, d)
    d = _plane_capsule_frames_as_c(m, mjx.collision(m, d))
    for stage in (
        mjx.make_constraint,
        mjx.transmission,
        mjx.fwd_velocity,
        mjx.fwd_actuation,
        mjx.fwd_acceleration,
    ):
        d = stage(m, d)
    if d.efc_J.size == 0:
        return d.replace(qacc=d.qacc_smooth)
    return mjx.solve(m, d)


_RK4_A = (0.5, 0.5, 1.0)  # the diagonal of C's RK4_A, its only non-zero entries
_RK4_B = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)


def _integrate_pos(m: mjx.Model, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """``mj_integratePos`` over one timestep (quaternions of free and ball joints included)."""
    fn = partial(_mjx_forward._integrate_pos, dt=m.opt.timestep)
    return _mjx_scan.flat(m, fn, "jqv", "q", m.jnt_type, qpos, qvel)


def _rk4_as_c(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """C's ``mj_RungeKutta(m, d, 4)`` after ``mj_forward``: every stage warm-started from the
    step's ``qacc_warmstart``; the result keeps the last stage's quantities (kinematics,
    contacts, forces, qacc) with the advanced state, and its qacc as the next warm start."""
    if m.na:
        raise NotImplementedError("step_as_c integrates no actuator activations")
    warmstart, h = d.qacc_warmstart, m.opt.timestep
    d = forward_as_c(m, d)
    start = d
    qvel_sum, qacc_sum = _RK4_B[0] * d.qvel, _RK4_B[0] * d.qacc
    for a, b in zip(_RK4_A, _RK4_B[1:], strict=True):
        d = d.replace(
            qpos=_integrate_pos(m, start.qpos, a * d.qvel),
            qvel=start.qvel + a * h * d.qacc,
            time=start.time + a * h,
            qacc_warmstart=warmstart,
        )
        d = forward_as_c(m, d)
        qvel_sum, qacc_sum = qvel_sum + b * d.qvel, qacc_sum + b * d.qacc
    return d.replace(
        qpos=_integrate_pos(m, start.qpos, qvel_sum),
        qvel=start.qvel + h * qacc_sum,
        time=start.time + h,
        qacc_warmstart=d.qacc,
    )


def step_as_c(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """``mj_step`` as C MuJoCo computes it (RK4 or Euler), on MJX.

    Not reproduced: C's ``mj_checkPos``/``mj_checkVel``/``mj_checkAcc``, which reset a
    diverged state (non-finite or beyond 1e10) with a warning; here it stays diverged (the
    Ant's non-finite state is unhealthy: the episode terminates either way).
    """
    if m.opt.integrator == mjx.IntegratorType.RK4:
        return _rk4_as_c(m, d)
    if m.opt.integrator == mjx.IntegratorType.EULER:
        d = mjx.euler(m, forward_as_c(m, d))
        return d.replace(qacc_warmstart=d.qacc)  # mj_advance's copy (also without constraints)
    raise NotImplementedError(f"step_as_c: integrator {m.opt.integrator}")


class _MJXFamily(BatchedEnv):
    """What both families share: the model on JAX's device, tasks as tensors, reset noise."""

    base: type

    def __init__(self, env: gym.Env, device: torch.device) -> None:
        super().__init__(env, device)
        name = type(self.unwrapped).__name__
        if not isinstance(self.unwrapped, self.base):
            raise ValueError(
                f"{type(self).__name__} steps {self.base.__name__} families; {name} is not one"
            )
        try:
            check_batchable(env)
        except ValueError as exc:
            raise ValueError(str(exc).replace("sampler 'mujoco'", "sampler 'mjx'", 1)) from None
        base = self.family = self.unwrapped
        self.model = mjx.put_model(base.model, device=jax_device(device))
        self.init_qpos = torch.as_tensor(base.init_qpos, dtype=torch.float32, device=device)
        self.init_qvel = torch.as_tensor(base.init_qvel, dtype=torch.float32, device=device)
        self.noise_scale = float(base._reset_noise_scale)
        self.frame_skip, self.dt = int(base.frame_skip), float(base.dt)
        self.task: dict[str, Tensor] = {}
        self.data: mjx.Data | None = None

    def set_tasks(self, tasks: Sequence[dict[str, Any]]) -> None:
        arrays = [task_to_arrays(task, self.family.task_space) for task in tasks]
        self.task = {
            key: torch.as_tensor(
                np.stack([np.asarray(a[key], dtype=np.float32) for a in arrays]),
                device=self.device,
            )
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
        raise NotImplementedError


class MJXHalfCheetah(_MJXFamily):
    """A HalfCheetah family (``HalfCheetahTaskEnv`` with its ``task_reward``) as one MJX batch.

    The compiled functions hold only the physics and the observation, so every instance of
    a family (and every HalfCheetah family: one model) with the same batch size reuses one
    compilation; the reward is the family's own ``task_reward`` on torch tensors.
    """

    base = HalfCheetahTaskEnv

    def __init__(self, env: gym.Env, device: torch.device) -> None:
        super().__init__(env, device)
        self.obs_skip = 1 if self.family._exclude_current_positions_from_observation else 0
        self.x_position = torch.zeros(0, device=device)

    def set_state(self, qpos: Tensor, qvel: Tensor) -> Tensor:
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


class MJXAnt(_MJXFamily):
    """An Ant family (``AntTaskEnv`` with its ``task_reward``) as one MJX batch, on
    ``step_as_c`` (C MuJoCo's physics; stock ``mjx.step`` differs for this model).

    As Ant-v5: ``frame_skip`` physics steps then ``mj_rnePostConstraint`` (``cfrc_ext``), the
    velocity from the main body's ``xpos`` (which, as in C, is the last RK4 stage's), the
    observation (positions, velocities, clipped ``cfrc_ext`` of every body but the world),
    ``AntTaskEnv._get_rew`` (task term + survive bonus while healthy - control cost - contact
    cost) and the termination when unhealthy (torso z outside the healthy range, or a
    non-finite state).
    """

    base = AntTaskEnv

    def __init__(self, env: gym.Env, device: torch.device) -> None:
        super().__init__(env, device)
        family = self.family
        self.obs_skip = 2 if family._exclude_current_positions_from_observation else 0
        self.cfrc_in_obs = bool(family._include_cfrc_ext_in_observation)
        self.force_range = tuple(float(x) for x in family._contact_force_range)
        self.body = int(family.model.body(family._main_body).id)
        self.healthy_z = tuple(float(x) for x in family._healthy_z_range)
        self.xy = torch.zeros(0, 2, device=device)

    def _static(self) -> dict[str, Any]:
        return {
            "skip": self.obs_skip,
            "body": self.body,
            "cfrc": self.cfrc_in_obs,
            "force_range": self.force_range,
        }

    def set_state(self, qpos: Tensor, qvel: Tensor) -> Tensor:
        qpos, qvel = to_jax(qpos.float()), to_jax(qvel.float())
        self.data, obs, xy, _ = _ant_reset_batch(self.model, qpos, qvel, **self._static())
        self.xy = to_torch(xy)
        return to_torch(obs)

    def step(self, action: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``AntEnv.step`` for every row: physics and observation in JAX, the reward in torch."""
        self.data, obs, xy, forces = _ant_step_batch(
            self.model, self.data, to_jax(action), frame_skip=self.frame_skip, **self._static()
        )
        family = self.family
        xy = to_torch(xy)
        velocity = (xy - self.xy) / self.dt
        self.xy = xy
        qpos, qvel = to_torch(self.data.qpos), to_torch(self.data.qvel)
        forward, _ = family.task_reward(velocity[:, 0], qpos, self.task)
        low, high = self.healthy_z
        finite = torch.isfinite(qpos).all(dim=1) & torch.isfinite(qvel).all(dim=1)
        healthy = finite & (low <= qpos[:, 2]) & (qpos[:, 2] <= high)
        survive = healthy * family._healthy_reward
        ctrl_cost = family._ctrl_cost_weight * action.square().sum(dim=-1)
        contact_cost = family._contact_cost_weight * to_torch(forces).square().sum(dim=(1, 2))
        reward = forward + survive - ctrl_cost - contact_cost
        terminated = ~healthy & bool(family._terminate_when_unhealthy)
        return to_torch(obs), reward, terminated


def mjx_batched_env(env: gym.Env, device: torch.device) -> BatchedEnv:
    """``MJXHalfCheetah`` or ``MJXAnt`` for a family (``TorchSampler``'s ``batched``)."""
    for batched in (MJXHalfCheetah, MJXAnt):
        if isinstance(env.unwrapped, batched.base):
            return batched(env, device)
    name = type(env.unwrapped).__name__
    raise ValueError(
        f"sampler 'mjx' steps families built on HalfCheetahTaskEnv or AntTaskEnv; {name} is not one"
    )


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


def _ant_observe(
    data: mjx.Data, skip: int, cfrc: bool, force_range: tuple[float, float]
) -> tuple[jax.Array, jax.Array]:
    """v5 Ant's ``_get_obs`` for every row, and the clipped ``cfrc_ext`` (``contact_forces``)."""
    forces = jnp.clip(data.cfrc_ext, *force_range)
    parts = [data.qpos[:, skip:], data.qvel]
    if cfrc:
        parts.append(forces[:, 1:].reshape(forces.shape[0], -1))
    return jnp.concatenate(parts, axis=1), forces


@partial(jax.jit, static_argnames=("skip", "body", "cfrc", "force_range"))
def _ant_reset_batch(
    model: mjx.Model,
    qpos: jax.Array,
    qvel: jax.Array,
    *,
    skip: int,
    body: int,
    cfrc: bool,
    force_range: tuple[float, float],
) -> tuple[mjx.Data, jax.Array, jax.Array, jax.Array]:
    """``mj_resetData``, the state, ``mj_forward``: cfrc_ext and the warm start stay zero."""

    def one(q: jax.Array, v: jax.Array) -> mjx.Data:
        d = forward_as_c(model, mjx.make_data(model).replace(qpos=q, qvel=v))
        return d.replace(qacc_warmstart=jnp.zeros_like(d.qacc_warmstart))

    data = jax.vmap(one)(qpos, qvel)
    obs, forces = _ant_observe(data, skip, cfrc, force_range)
    return data, obs, data.xpos[:, body, :2], forces


@partial(jax.jit, static_argnames=("frame_skip", "skip", "body", "cfrc", "force_range"))
def _ant_step_batch(
    model: mjx.Model,
    data: mjx.Data,
    action: jax.Array,
    *,
    frame_skip: int,
    skip: int,
    body: int,
    cfrc: bool,
    force_range: tuple[float, float],
) -> tuple[mjx.Data, jax.Array, jax.Array, jax.Array]:
    """``MujocoEnv.do_simulation`` (``mj_step`` x frame_skip, ``mj_rnePostConstraint``) for
    every row, then v5's observation, the main body's (x, y) and the clipped contact forces."""

    def physics(d: mjx.Data, a: jax.Array) -> mjx.Data:
        d = d.replace(ctrl=a)
        d = jax.lax.fori_loop(0, frame_skip, lambda _, x: step_as_c(model, x), d)
        return mjx.rne_postconstraint(model, d)

    data = jax.vmap(physics)(data, action)
    obs, forces = _ant_observe(data, skip, cfrc, force_range)
    return data, obs, data.xpos[:, body, :2], forces
