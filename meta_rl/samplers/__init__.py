"""Samplers: where episodes come from. Every backend gives the same ``Sampler`` interface and,
for the same seed, the same episodes.

- ``vector``: in-process, every sub-env of every task stepped together (``VectorSampler``).
- ``mujoco``: the same with HalfCheetah/Ant families stepped batched, bitwise the same episodes
  (``MuJoCoSampler`` over ``meta_rl.samplers.mujoco.MuJoCoBatch``, which worker processes and
  other samplers can hold for their own shard).
- ``process``: tasks sharded over worker processes (``meta_rl.samplers.process``).
- ``torch``: Navigation2D, bandits and the tabular MDP as tensors on the policy's device
  (``meta_rl.samplers.torch_native``).

The process and torch backends are imported where they are chosen (``meta_rl.builders``).
"""

from meta_rl.samplers.base import (
    EnvBatch,
    GymEnvs,
    Sampler,
    arrays_to_episodes,
    encode_observations,
    episode_array_specs,
    observation_dim,
    rollout,
)
from meta_rl.samplers.vector import MuJoCoSampler, VectorSampler

__all__ = [
    "EnvBatch",
    "GymEnvs",
    "MuJoCoSampler",
    "Sampler",
    "VectorSampler",
    "arrays_to_episodes",
    "encode_observations",
    "episode_array_specs",
    "observation_dim",
    "rollout",
]
