"""Position information, three ways in which it can enter the model.

- `learned`: absolute embeddings added to the token embeddings (BERT, Devlin et al. 2019).
- `sinusoidal`: fixed absolute sin/cos embeddings (Vaswani et al. 2017, "Attention Is All You
  Need").
- `rope`: rotary embeddings applied to queries and keys (Su et al. 2021, "RoFormer").
- `alibi`: a fixed per-head linear distance penalty on the logits (Press et al. 2022, "Train
  Short, Test Long: Attention with Linear Biases").
- `t5_relative`: a learned per-head logit bias per bucket of relative distance (Raffel et al.
  2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer").

Each class says where it acts with `where`: "embeddings" (called once on the embedding
output), "qk" (called by every attention layer on queries and keys) or "bias" (built inside
every attention layer, called with the positions of the (query, key) pairs the attention
keeps; see `encoders.attention.base`). `positions` is an int array [batch, length]; with packed
sequences it restarts at 0 in each segment, so a packed example sees exactly the positions it
would see alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from encoders import sharding
from encoders.errors import ConfigError
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def check_length(length: int, config: ModelConfig, name: str) -> None:
  """Absolute tables have `model.max_length` rows; a longer input would gather out of range."""
  if length > config.max_length:
    raise ConfigError(f"input length {length} exceeds model.max_length={config.max_length} "
                      f"(the size of the {name} position table)")


@register("position", "learned")
class LearnedPosition(nn.Module):
  config: ModelConfig
  where = "embeddings"

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    c = self.config
    check_length(x.shape[1], c, "learned")
    table = self.param("embedding",
                       sharding.param(nn.initializers.normal(c.init_std), ("position", "embed")),
                       (c.max_length, c.embed_width), c.params_dtype)
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
    check_length(x.shape[1], self.config, "sinusoidal")
    table = jnp.asarray(sinusoid_table(self.config.max_length, self.config.embed_width,
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


def _relative(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
  """k - q for [batch, 1 | heads, ..., Q] and [batch, 1 | heads, ..., K] -> [..., Q, K]."""
  return k_positions[..., None, :] - q_positions[..., :, None]


def _per_head(values: jax.Array, ndim: int) -> jax.Array:
  """[heads] -> [heads, 1, ..., 1], aligned with axis 1 of an ndim-dimensional bias."""
  return values.reshape(values.shape + (1,) * (ndim - 2))


def alibi_slopes(heads: int) -> np.ndarray:
  """Press et al.'s geometric slopes 2^(-8/h), 2^(-16/h), ...; for a head count that is not a
  power of two, those of the next lower power plus every other one of the next higher."""
  if math.log2(heads).is_integer():
    return 2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)
  lower = 2 ** math.floor(math.log2(heads))
  return np.concatenate([alibi_slopes(lower), alibi_slopes(2 * lower)[0::2][:heads - lower]])


@register("position", "alibi")
class AlibiBias(nn.Module):
  """Logit bias -slope_h * |k - q|: symmetric, the bidirectional form used by encoders
  (MosaicBERT); no parameters, so it extrapolates to lengths never seen in training."""
  config: ModelConfig
  where = "bias"

  def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """Positions [batch, 1 | heads, ..., Q] and [..., K] -> f32 [batch, heads, ..., Q, K]."""
    distance = jnp.abs(_relative(q_positions, k_positions)).astype(jnp.float32)
    slopes = jnp.asarray(alibi_slopes(self.config.num_heads), jnp.float32)
    return -_per_head(slopes, distance.ndim) * distance


def relative_bucket(relative: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
  """T5's bidirectional bucket of k - q: half the buckets per direction; in each, distances
  below a quarter of the buckets get their own bucket and the rest share logarithmically wider
  ones up to `max_distance`, beyond which all fall in the last bucket."""
  half = num_buckets // 2
  exact = half // 2
  distance = jnp.abs(relative)
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact)
  wide = exact + (log_ratio / np.log(max_distance / exact) * (half - exact)).astype(jnp.int32)
  bucket = jnp.where(distance < exact, distance, jnp.minimum(wide, half - 1))
  return bucket + jnp.where(relative > 0, half, 0)


@register("position", "t5_relative")
class T5RelativeBias(nn.Module):
  """Learned bias table [num_buckets, heads] indexed by the bucket of k - q; each attention
  layer owns one (T5 shares one across layers; here every layer learns its own)."""
  config: ModelConfig
  num_buckets: int = 32
  max_distance: int = 128
  where = "bias"

  @nn.compact
  def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """Positions [batch, 1 | heads, ..., Q] and [..., K] -> f32 [batch, heads, ..., Q, K]."""
    c = self.config
    if self.num_buckets < 4 or self.num_buckets % 2:
      raise ConfigError(f"model.position.num_buckets={self.num_buckets!r} must be even and >= 4")
    if self.max_distance <= self.num_buckets // 4:
      raise ConfigError(f"model.position.max_distance={self.max_distance!r} must exceed "
                        f"num_buckets // 4 = {self.num_buckets // 4}")
    table = self.param("relative_bias",
                       sharding.param(nn.initializers.normal(c.init_std), ("position", "heads")),
                       (self.num_buckets, c.num_heads), c.params_dtype)
    bucket = relative_bucket(_relative(q_positions, k_positions), self.num_buckets,
                             self.max_distance)
    heads = _per_head(jnp.arange(c.num_heads), bucket.ndim)
    return table.T.astype(jnp.float32)[heads, bucket]
