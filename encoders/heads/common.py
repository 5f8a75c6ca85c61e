"""What the heads share: sequence pooling (whole rows or packed segments), the dense layer
every head uses (compute-dtype inputs, float32 accumulation) and a fast bias add."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import initializers, precision, sharding
from encoders.config import ModelConfig
from encoders.errors import ConfigError

POOLINGS = ("cls", "mean")


def pool(hidden: jax.Array, mask: jax.Array | None, how: str) -> jax.Array:
  """[batch, length, dim] -> [batch, dim]; `mean` ignores padding."""
  if how == "cls":
    return hidden[:, 0]
  if how == "mean":
    if mask is None:
      return hidden.mean(axis=1)
    weights = mask.astype(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1)
  raise ConfigError(f"model.head.pooling={how!r}; allowed: {', '.join(POOLINGS)}")


def pool_segments(hidden: jax.Array, mask: jax.Array | None, segment_ids: jax.Array,
                  num: int, how: str) -> jax.Array:
  """[batch, length, dim] -> [batch, num, dim]: segment s + 1 pooled (zeros if absent)."""
  if how not in POOLINGS:
    raise ConfigError(f"model.head.pooling={how!r}; allowed: {', '.join(POOLINGS)}")
  member = segment_ids[:, None, :] == jnp.arange(1, num + 1)[None, :, None]  # [B, S, T]
  if mask is not None:
    member = member & mask[:, None, :]
  if how == "cls":
    first = jnp.argmax(member, axis=-1)
    return jnp.take_along_axis(hidden, first[..., None], axis=1)
  weights = member.astype(hidden.dtype)
  return jnp.einsum("bst,btd->bsd", weights, hidden) / jnp.maximum(
      weights.sum(-1, keepdims=True), 1)


def check_num_classes(num_classes: int, task: str) -> None:
  """A classifier head needs its class count; 0 means `task` was to set it from its data."""
  if num_classes <= 0:
    raise ConfigError(f"model.head.num_classes={num_classes} must be positive (the {task} "
                      "task sets 0 from its data)")


def dense(c: ModelConfig, features: int, axes, name: str, out_dtype=None, *,
          use_bias: bool = True, role: str = "in") -> nn.Dense:
  """Reads its input in the compute dtype, accumulates in float32, returns `out_dtype`
  (default: the compute dtype); `role` picks the initialiser (encoders/initializers.py)."""
  return nn.Dense(features, use_bias=use_bias, dtype=c.compute_dtype, param_dtype=c.params_dtype,
                  kernel_init=sharding.param(initializers.weight(c, role), axes),
                  bias_init=sharding.param(nn.initializers.zeros, axes[1:]),
                  dot_general=precision.dot_general(out_dtype), name=name)


@jax.custom_vjp
def add_bias(x: jax.Array, bias: jax.Array) -> jax.Array:
  """x + bias (same dtype) over the last axis; the bias gradient is a matrix-vector product
  with ones instead of a column sum, which XLA:CPU runs ~30x slower (0.52 s against 17 ms for
  the [4096, 30522] gradient of BERT-sized MLM logits; docs/benchmarks.md)."""
  return x + bias


def _add_bias_fwd(x, bias):
  return x + bias, None


def _add_bias_bwd(_, g):
  rows = g.reshape(-1, g.shape[-1])
  return g, jnp.ones((rows.shape[0],), rows.dtype) @ rows


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)
