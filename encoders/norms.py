"""Normalisation layers, computed in float32 whatever the compute dtype.

- `layernorm`: Ba et al. 2016, "Layer Normalization".
- `rmsnorm`: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization".
- `identity`: no normalisation (returns its input in the compute dtype), e.g. for a layer of
  `model.layer_pattern` without norms, or a norm-free ablation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig


@register("norm", "layernorm")
class LayerNorm(nn.Module):
  config: ModelConfig
  epsilon: float = 1e-6
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm(
        epsilon=self.epsilon, use_bias=self.use_bias, dtype=jnp.float32,
        param_dtype=self.config.params_dtype,
        scale_init=sharding.param(nn.initializers.ones, ("embed",)),
        bias_init=sharding.param(nn.initializers.zeros, ("embed",)),
        name="layernorm")(x.astype(jnp.float32))
    return y.astype(self.config.compute_dtype)


@register("norm", "rmsnorm")
class RMSNorm(nn.Module):
  config: ModelConfig
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.RMSNorm(
        epsilon=self.epsilon, dtype=jnp.float32, param_dtype=self.config.params_dtype,
        scale_init=sharding.param(nn.initializers.ones, ("embed",)),
        name="rmsnorm")(x.astype(jnp.float32))
    return y.astype(self.config.compute_dtype)


@register("norm", "identity")
class Identity(nn.Module):
  config: ModelConfig

  def __call__(self, x: jax.Array) -> jax.Array:
    return x.astype(self.config.compute_dtype)
