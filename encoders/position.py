"""Position information, three ways in which it can enter the model.

- `learned`: absolute embeddings added to the token embeddings (BERT, Devlin et al. 2019).
- `sinusoidal`: fixed absolute sin/cos embeddings (Vaswani et al. 2017, "Attention Is All You
  Need").
- `rope`: rotary embeddings applied to queries and keys (Su et al. 2021, "RoFormer").

Each class says where it acts with `where`: "embeddings" (called once on the embedding
output) or "qk" (called by every attention layer on queries and keys). `positions` is an int
array [batch, length]; with packed sequences it restarts at 0 in each segment, so a packed
example sees exactly the positions it would see alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from encoders import sharding
from encoders.config import ModelConfig
from encoders.registry import register


@register("position", "learned")
class LearnedPosition(nn.Module):
  config: ModelConfig
  where = "embeddings"

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    c = self.config
    table = self.param("embedding",
                       sharding.param(nn.initializers.normal(c.init_std), ("position", "embed")),
                       (c.max_length, c.dim), c.params_dtype)
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)


def sinusoid_table(length: int, dim: int, max_timescale: float = 10_000.0) -> np.ndarray:
  """[length, dim] table: sin in the first half of features, cos in the second."""
  half = dim // 2
  inv_freq = np.exp(-np.log(max_timescale) * np.arange(half) / max(half - 1, 1))
  angles = np.arange(length)[:, None] * inv_freq[None, :]
  table = np.zeros((length, dim), np.float32)
  table[:, :half] = np.sin(angles)
  table[:, half:2 * half] = np.cos(angles)
  return table


@register("position", "sinusoidal")
class SinusoidalPosition(nn.Module):
  config: ModelConfig
  max_timescale: float = 10_000.0
  where = "embeddings"

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    table = jnp.asarray(sinusoid_table(self.config.max_length, self.config.dim,
                                       self.max_timescale))
    return x + jnp.take(table, positions, axis=0).astype(x.dtype)


@register("position", "rope")
class RotaryPosition(nn.Module):
  """Rotates feature pairs (i, i + d/2) of q and k by position-dependent angles."""
  config: ModelConfig
  base: float = 10_000.0
  fraction: float = 1.0  # share of each head's features that rotate (partial RoPE)
  where = "qk"

  def __call__(self, q: jax.Array, k: jax.Array, positions: jax.Array):
    return self.rotate(q, positions), self.rotate(k, positions)

  def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """x: [batch, length, heads, head_dim]."""
    head_dim = x.shape[-1]
    rot = int(head_dim * self.fraction) // 2 * 2
    half = rot // 2
    inv_freq = 1.0 / (self.base ** (jnp.arange(half, dtype=jnp.float32) * 2 / rot))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, l, half]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2, rest = xf[..., :half], xf[..., half:rot], xf[..., rot:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
    return rotated.astype(x.dtype)
