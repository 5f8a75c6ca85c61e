"""What every token mixer shares: the attention call and its checks, padding, uniform init.

A token mixer replaces attention in a Block and keeps its interface,

    y = mixer(x, mask=None, segment_ids=None, positions=None, deterministic=True)

x, y: [batch, length, dim]. It has no queries or keys, so it ignores `positions` (absolute
`learned`/`sinusoidal` positions still reach it through the embeddings) and refuses position
variants that act on attention scores (rope, alibi, t5_relative). Padded positions (`mask`
False) are zeroed before anything mixes along the length, so real outputs never read them.
`supports_segments = False` marks mixers whose FFT mixes the whole row: `segment_ids` (packed
rows) are then a one-line error, as for linformer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig


class TokenMixer(nn.Module):
  """Base of the registered token mixers (not itself registered): `__call__` checks the inputs
  and the options (`check_options`), calls the subclass's `mix` and returns its output in the
  compute dtype, sharded as the hidden states (as `Attention.__call__` wraps `attend`)."""
  config: ModelConfig
  supports_segments = True
  accepts_positions = ("embeddings",)  # position variants' `where` it applies (encoders/needs.py)

  def check_options(self) -> None:
    """One-line errors for the subclass's options (none here)."""

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    """x [batch, length, dim] -> [batch, length, dim], any float dtype."""
    raise TypeError(f"{type(self).__name__} is abstract: a token mixer defines mix()")

  def parameter_groups(self) -> tuple:
    """The runner's per-parameter rules (encoders/needs.py); none by default."""
    return ()

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    del positions  # no queries or keys (see the module doc)
    self.check_inputs(segment_ids)
    self.check_options()
    y = self.mix(x, mask=mask, segment_ids=segment_ids, deterministic=deterministic)
    return sharding.constrain(y.astype(self.config.compute_dtype), sharding.HIDDEN)

  def check_inputs(self, segment_ids: jax.Array | None) -> None:
    """One-line errors for a position variant it cannot apply and for packed rows it cannot
    keep apart."""
    name, c = self.registry_name, self.config
    if c.variant_class("position").where not in self.accepts_positions:
      raise ConfigError(f"model.position.name={c.spec('position')['name']!r} acts on attention "
                        f"scores, which token mixer {name!r} has none of; use learned or "
                        "sinusoidal")
    if segment_ids is not None and not self.supports_segments:
      raise ConfigError(f"model.attention.name={name!r} mixes the whole row with an FFT and "
                        "cannot keep packed segments apart; pass no segment_ids (do not pack) "
                        "or use s5/mamba")

  def check_positive(self, *fields: str) -> None:
    for field in fields:
      if getattr(self, field) <= 0:
        raise ConfigError(f"model.attention.{field}={getattr(self, field)!r} must be positive")

  def check_dt_range(self) -> None:
    if not 0.0 < self.dt_min <= self.dt_max:
      raise ConfigError(f"model.attention.dt_min={self.dt_min!r} and dt_max={self.dt_max!r} "
                        "must satisfy 0 < dt_min <= dt_max")


def zero_padding(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """x [batch, length, ...] with padded positions (mask False) set to 0."""
  if mask is None:
    return x
  return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0)


def uniform(bound: float) -> nn.initializers.Initializer:
  """U(-bound, bound), e.g. torch's default init of a Linear or Conv1d (bound 1/sqrt(fan_in))."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
