"""The names a config may choose for a policy's parts, importable without torch.

Config validation reads these before torch is loaded; `meta_rl.agents.policies` maps the same
names to modules (its `ACTIVATIONS` is keyed by `Activation`, and a test holds them equal).
"""

from __future__ import annotations

from typing import Literal

Activation = Literal["relu", "tanh", "sigmoid", "elu", "gelu", "silu", "softplus", "leaky_relu"]
"""Hidden-layer nonlinearities of the MLP, GRU and SB3 policies."""
