"""Batched MuJoCo: all sub-envs of a HalfCheetah or Ant family behind one stepping object.

A Gymnasium MuJoCo step spends more time in Python (wrappers, observation assembly, reward
terms, ``TimeLimit``) than in MuJoCo's C step. ``MuJoCoBatch`` keeps only the C calls per
sub-env, exactly those of Gymnasium's ``MujocoEnv.do_simulation`` (``mj_step`` with
``nstep = frame_skip``, then ``mj_rnePostConstraint`` where the observation or reward reads
``cfrc_ext``), from a thread pool (``mj_step`` releases the GIL), and computes observations,
rewards, reward terms, terminations, time limits and reset noise for the whole batch with numpy.
For the same initial states, tasks and actions it gives bitwise the Gymnasium family's numbers
(``tests/test_mujoco_batch.py``).

Why not ``mujoco.rollout`` (3.3.0): it restores each trajectory from an
``mjSTATE_FULLPHYSICS`` state (time, qpos, qvel, act, plugin state) and returns only such
states and sensor data. The constraint solver's warm start (``qacc_warmstart``) is an input
only (zero when not given) and never returned, so a closed-loop policy, which needs one call
per env step, cannot carry it from one step to the next. With the warm start dropped, the
solver stops at its tolerance from another starting point and the dynamics amplify the
difference: HalfCheetah's observations leave the Gymnasium trajectory by more than 1e-9
within 100 steps (``test_rollout_warmstart_is_why_rollout_is_not_used``). The Ant's
``cfrc_ext`` (what ``mj_rnePostConstraint`` computes after the whole step, from the
intermediate quantities the RK4 integrator leaves in ``MjData``) is in none of its outputs.
Exact equivalence therefore needs each sub-env's own ``MjData``, stepped by the same C calls;
``rollout`` would only pay off for open-loop controls.

One object steps one shard: the in-process sampler holds one for the whole batch (a thread
per core), each ``ProcessSampler`` worker holds one for its shard (one thread), and any other
sampler (Ray actors) can hold one and pass it to ``meta_rl.samplers.base.rollout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import seeding

from meta_rl.envs.ant import AntTaskEnv
from meta_rl.envs.base import task_to_arrays
from meta_rl.envs.half_cheetah import HalfCheetahTaskEnv
from meta_rl.samplers.base import EnvBatch, GymEnvs, make_family

_PHYSICS = mujoco.mjtState.mjSTATE_PHYSICS  # qpos, qvel, act: what the reward and obs read

# What the batch recomputes for the whole batch: a family that overrides any of these (or the
# step itself) has semantics the batch does not know, so it is refused rather than guessed.
_REPRODUCED = (
    "step",
    "_get_obs",
    "_get_rew",
    "reset",
    "reset_model",
    "set_state",
    "do_simulation",
    "_step_mujoco_simulation",
    "control_cost",
    "state_vector",
)
_ANT_REPRODUCED = ("contact_forces", "contact_cost", "is_healthy", "healthy_reward")


def check_batchable(env: gym.Env) -> type:
    """The batched base (``HalfCheetahTaskEnv`` or ``AntTaskEnv``) of a family, or ValueError."""
    unwrapped = env.unwrapped
    name = type(unwrapped).__name__
    for base, names in (
        (HalfCheetahTaskEnv, _REPRODUCED),
        (AntTaskEnv, _REPRODUCED + _ANT_REPRODUCED),
    ):
        if isinstance(unwrapped, base):
            changed = [n for n in names if getattr(type(unwrapped), n) is not getattr(base, n)]
            if changed:
                raise ValueError(
                    f"sampler 'mujoco': {name} overrides {', '.join(changed)} of "
                    f"{base.__name__}, which the batched backend does not reproduce"
                )
            return base
    raise ValueError(
        f"sampler 'mujoco' steps families built on HalfCheetahTaskEnv or AntTaskEnv "
        f"(meta_rl.envs) with a declared task_reward; {name} is not one"
    )


def supports(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``MuJoCoBatch`` can step this family."""
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        check_batchable(env)
    except ValueError:
        return False
    finally:
        env.close()
    return True


class MuJoCoBatch(EnvBatch):
    """``num_envs`` sub-envs of one HalfCheetah/Ant family, each with its own ``MjData``.

    Every sub-env steps the family's compiled model (one env's, shared as
    ``SharedModelMixin`` shares it) and keeps its own ``MjData`` and reset generator, seeded as
    Gymnasium seeds an env; so a task may enter only the reward (``task_reward``), never the
    model. ``step`` returns the
    reward terms of the Gymnasium family's ``info`` as arrays (``reward_*``, the task's extra
    entries, ``x_position`` and ``x_velocity``, and for the Ant ``y_position`` and
    ``y_velocity``). ``threads > 1`` steps contiguous slices of the active sub-envs from that
    many threads; the result does not depend on it.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        env_kwargs: Mapping[str, Any] | None = None,
        threads: int = 1,
    ) -> None:
        self._env, self.horizon = make_family(env_id, dict(env_kwargs or {}))
        base = self._env.unwrapped
        self.ant = check_batchable(self._env) is AntTaskEnv
        self.family = base  # its task_reward and weights are the batch's
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.num_envs = num_envs
        self.model = model = base.model
        self.frame_skip: int = base.frame_skip
        self.dt: float = base.dt
        self.datas = [mujoco.MjData(model) for _ in range(num_envs)]
        self._ctrl = [d.ctrl for d in self.datas]  # views, made once: attribute access is slow
        self._state = np.zeros((num_envs, mujoco.mj_stateSize(model, _PHYSICS)))
        self.qpos = self._state[:, : model.nq]
        self.qvel = self._state[:, model.nq : model.nq + model.nv]
        if self.ant:
            body = model.body(base._main_body).id
            self._xy_views = [d.xpos[body, :2] for d in self.datas]
            self._cfrc_views = [d.cfrc_ext for d in self.datas]
            self.xy = np.zeros((num_envs, 2))  # main body position, as of the last forward
            self.cfrc_ext = np.zeros((num_envs, model.nbody, 6))
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._tasks: dict[str, np.ndarray] = {}
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def __len__(self) -> int:
        return self.num_envs

    # --- tasks and resets ------------------------------------------------------------------------

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task per sub-env, validated against the family's task space as ``env.task`` is."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"{self.num_envs} sub-envs, got {len(tasks)} tasks")
        arrays = [task_to_arrays(task, self.family.task_space) for task in tasks]
        self._tasks = {key: np.stack([np.asarray(a[key]) for a in arrays]) for key in arrays[0]}

    def reset(self, tasks: Sequence[Mapping[str, Any]], seeds: Sequence[int | None]) -> np.ndarray:
        """Re-task and reset every sub-env (``MujocoEnv.reset`` per env); initial observations."""
        self.set_tasks(tasks)
        base, model = self.family, self.model
        scale = base._reset_noise_scale
        for i, (data, seed) in enumerate(zip(self.datas, seeds, strict=True)):
            if seed is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(None if seed is None else int(seed))[0]
            rng = self._rngs[i]
            mujoco.mj_resetData(model, data)
            data.qpos[:] = base.init_qpos + rng.uniform(low=-scale, high=scale, size=model.nq)
            data.qvel[:] = base.init_qvel + scale * rng.standard_normal(model.nv)
            mujoco.mj_forward(model, data)
            self._read(i, data)
        self._elapsed[:] = 0
        return self._observe(np.arange(self.num_envs))

    # --- stepping --------------------------------------------------------------------------------

    def _read(self, i: int, data: mujoco.MjData) -> None:
        mujoco.mj_getState(self.model, data, self._state[i], _PHYSICS)
        if self.ant:
            self.xy[i] = self._xy_views[i]
            self.cfrc_ext[i] = self._cfrc_views[i]

    def _physics(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Gymnasium's ``do_simulation`` for each row, in C, with the GIL released."""
        model, nstep, post = self.model, self.frame_skip, self.ant
        for row, action in zip(rows.tolist(), actions, strict=True):
            data = self.datas[row]
            self._ctrl[row][:] = action
            mujoco.mj_step(model, data, nstep=nstep)
            # only cfrc_ext needs it, and only the Ant reads cfrc_ext (nothing later reads it)
            if post:
                mujoco.mj_rnePostConstraint(model, data)
            self._read(row, data)

    def step(
        self, rows: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step the sub-envs ``rows`` with ``actions[j]`` for ``rows[j]``; per-row results."""
        rows = np.asarray(rows, dtype=np.int64)
        actions = np.asarray(actions)
        if actions.shape != (len(rows), self.model.nu):
            raise ValueError(f"actions of shape {actions.shape}, expected ({len(rows)}, nu)")
        before = self.xy[rows] if self.ant else self.qpos[rows, :1]
        if self._pool is None or len(rows) < 2 * self.threads:
            self._physics(rows, actions)
        else:
            bounds = np.linspace(0, len(rows), self.threads + 1).astype(int)
            chunks = [slice(a, b) for a, b in itertools.pairwise(bounds)]
            list(self._pool.map(lambda s: self._physics(rows[s], actions[s]), chunks))
        qpos = self.qpos[rows]
        after = self.xy[rows] if self.ant else qpos[:, :1]
        velocity = (after - before) / self.dt
        task = {key: value[rows] for key, value in self._tasks.items()}
        forward, extra = self.family.task_reward(velocity[:, 0], qpos, task)
        ctrl_cost = self.family._ctrl_cost_weight * np.sum(np.square(actions), axis=-1)
        terms = {"x_position": qpos[:, 0], "x_velocity": velocity[:, 0]}
        if self.ant:
            reward, terminated = self._ant_reward(rows, forward, ctrl_cost, terms)
            terms.update(y_position=qpos[:, 1], y_velocity=velocity[:, 1])
        else:
            reward, terminated = forward - ctrl_cost, np.zeros(len(rows), dtype=bool)
            terms.update(reward_forward=forward, reward_ctrl=-ctrl_cost)
        terms.update(extra)
        self._elapsed[rows] += 1
        truncated = self._elapsed[rows] >= self.horizon  # TimeLimit
        return self._observe(rows), reward, terminated, truncated, terms

    def _ant_reward(
        self,
        rows: np.ndarray,
        forward: np.ndarray,
        ctrl_cost: np.ndarray,
        terms: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``AntTaskEnv._get_rew`` and Ant-v5's termination, same operations in the same order."""
        base = self.family
        healthy = self._healthy(rows)
        survive = healthy * base._healthy_reward
        forces = self._contact_forces(rows)
        contact_cost = base._contact_cost_weight * np.sum(np.square(forces), axis=(1, 2))
        reward = forward + survive - ctrl_cost - contact_cost
        terms.update(
            reward_forward=forward,
            reward_ctrl=-ctrl_cost,
            reward_contact=-contact_cost,
            reward_survive=survive,
        )
        return reward, ~healthy & bool(base._terminate_when_unhealthy)

    def _healthy(self, rows: np.ndarray) -> np.ndarray:
        state = self._state[rows, : self.model.nq + self.model.nv]
        low, high = self.family._healthy_z_range
        z = state[:, 2]
        return np.isfinite(state).all(axis=1) & (low <= z) & (z <= high)

    def _contact_forces(self, rows: np.ndarray) -> np.ndarray:
        low, high = self.family._contact_force_range
        return np.clip(self.cfrc_ext[rows], low, high)

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        """``_get_obs`` of v5 HalfCheetah / Ant for the rows, float64 as there."""
        base = self.family
        qpos, qvel = self.qpos[rows], self.qvel[rows]
        skip = 2 if self.ant else 1
        parts = [qpos[:, skip:] if base._exclude_current_positions_from_observation else qpos]
        parts.append(qvel)
        if self.ant and base._include_cfrc_ext_in_observation:
            parts.append(self._contact_forces(rows)[:, 1:].reshape(len(rows), -1))
        return np.concatenate(parts, axis=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._env.close()


def make_env_batch(
    backend: str,
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    *,
    threads: int = 1,
) -> EnvBatch:
    """``num_envs`` sub-envs of a family: ``gym`` (Gymnasium envs) or ``mujoco`` (batched)."""
    if backend == "mujoco":
        return MuJoCoBatch(env_id, num_envs, env_kwargs=env_kwargs, threads=threads)
    if backend != "gym":
        raise ValueError(f"unknown env backend {backend!r}: gym | mujoco")
    return GymEnvs([gym.make(env_id, **(env_kwargs or {})) for _ in range(num_envs)])
