"""Samplers: where episodes come from. Every backend gives the same ``Sampler`` interface and,
for the same seed, the same episodes.

- ``vector``: in-process, every sub-env of every task stepped together (``VectorSampler``).
- ``process``: tasks sharded over worker processes (``meta_rl.samplers.process``).
- ``torch``: Navigation2D, bandits and the tabular MDP as tensors on the policy's device
  (``meta_rl.samplers.torch_native``).

The process and torch backends are imported where they are chosen (``meta_rl.builders``).
"""

from meta_rl.samplers.base import (
    Sampler,
    arrays_to_episodes,
    encode_observations,
    episode_array_specs,
    observation_dim,
    rollout,
    sample_action,
)
from meta_rl.samplers.vector import VectorSampler

__all__ = [
    "Sampler",
    "VectorSampler",
    "arrays_to_episodes",
    "encode_observations",
    "episode_array_specs",
    "observation_dim",
    "rollout",
    "sample_action",
]
