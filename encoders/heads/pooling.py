"""Sequence pooling for the heads: whole rows (`pool`) or each packed segment
(`pool_segments`), by the first token (`cls`) or the mean over real tokens (`mean`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
