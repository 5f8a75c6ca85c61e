"""Logical axis names for parameters and activations, and the default mesh rules.

Every parameter is created with `nn.with_logical_partitioning(init, LOGICAL_AXES)` and every key
activation is constrained with `nn.with_logical_constraint(x, LOGICAL_AXES)`. The runner maps
logical names to mesh axes (data, fsdp, tensor, expert) with `DEFAULT_RULES`; on one device the
mesh is 1x1x1x1 and all of this is a no-op.

Parameter axes: vocab, embed, heads, kv (per-head dim), mlp, layers (nn.scan stack), experts,
state (a state space model's state dimension; token mixers put their inner channels on mlp).
Activation axes carry an `act_` prefix so that FSDP can shard the parameter `embed` axis
without sharding activations along features (as in MaxText).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

MESH_AXES = ("data", "fsdp", "tensor", "expert")

# (logical name, mesh axis or axes or None). First matching rule wins.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("experts", "expert"),
    ("position", None),
    ("classes", None),
    ("state", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)

BATCH = ("act_batch",)
HIDDEN = ("act_batch", "act_length", "act_embed")
HEADS = ("act_batch", "act_length", "act_heads", "act_kv")
MLP = ("act_batch", "act_length", "act_mlp")
LOGITS = ("act_batch", "act_length", "act_vocab")


def mesh_axes(logical: str) -> tuple[str, ...]:
  """The mesh axes `DEFAULT_RULES` maps a logical name to (() when replicated)."""
  for name, axes in DEFAULT_RULES:
    if name == logical:
      return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return ()


def param(init: nn.initializers.Initializer, axes: Sequence[str | None]):
  """An initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, tuple(axes))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Logical sharding constraint; a no-op outside a mesh/rules context."""
  return nn.with_logical_constraint(x, tuple(axes))
