"""One compiled MuJoCo model per process, shared by every sub-env of a family; task rewards.

A meta-batch holds hundreds of live envs (one episode per sub-env, stepped in lockstep), and
Gymnasium's ``MujocoEnv`` compiles its own ``MjModel`` for each: ~0.5 MB of HalfCheetah
constants per env, all read on every ``mj_step``, which pushes each other out of the CPU
caches. ``mj_step`` only reads the model, so sub-envs of one family can share it; each keeps its
own ``MjData`` (the state). Measured with 400 HalfCheetahVel envs stepped round-robin: 21.2k ->
23.8k steps/s. A family that changes its model per task must not use this mixin.

## Task rewards, declared once for one env and for a batch
The HalfCheetah and Ant families (`HalfCheetahTaskEnv`, `AntTaskEnv`) get their task-dependent
term from a method `task_reward(x_velocity, qpos, task) -> (reward_forward, extra_info)`
written with numpy operations that work elementwise: the Gymnasium env calls it with scalars
(`qpos` of shape `(nq,)`, `task` from `_task_values()`), the batched sampler
(`train.sampler: mujoco`) with arrays (`x_velocity` of shape `(n,)`, `qpos` `(n, nq)`, each
task entry stacked over the `n` sub-envs). Write it so both give the same numbers (index
`qpos[..., i]`, reduce over `axis=-1`), and any family on these bases runs batched as well.
A `task_reward` written with Python operators and array methods only (`abs`, `*`, `-`,
`.sum(axis=-1)`, no `np.` call) also runs on torch tensors, on any device, in
`train.sampler: mjx` (`meta_rl.samplers.mjx`).
"""

from __future__ import annotations

from typing import Any

import mujoco

#: What `task_reward` returns: the `reward_forward` term (scalar or `(n,)`) and extra info.
TaskReward = tuple[Any, dict[str, Any]]

_MODELS: dict[tuple[str, int, int], mujoco.MjModel] = {}


class SharedModelMixin:
    """Put before a Gymnasium ``MujocoEnv`` subclass in the bases to share its ``MjModel``."""

    fullpath: str
    width: int
    height: int

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        # the offscreen framebuffer size lives in the model, so it is part of the key
        key = (self.fullpath, self.width, self.height)
        if key not in _MODELS:
            _MODELS[key] = super()._initialize_simulation()[0]  # type: ignore[misc]
        model = _MODELS[key]
        return model, mujoco.MjData(model)
