"""Output heads on top of the encoder's hidden states [batch, length, dim].

- `mlm`: masked-language-model head as in BERT (Devlin et al. 2019): dense -> GELU -> norm ->
  vocabulary projection, tied to the token embeddings by default.
- `classification`: sequence classification from a pooled vector (`cls`: the first token, as
  BERT; `mean`: the mask-aware average, as Sentence-BERT, Reimers & Gurevych 2019), with BERT's
  optional tanh pooler.

Heads return float32 logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.ffn import activation
from encoders.registry import register

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


def _dense(c: ModelConfig, features: int, axes, name: str, dtype=None) -> nn.Dense:
  return nn.Dense(features, dtype=dtype or c.compute_dtype, param_dtype=c.params_dtype,
                  kernel_init=sharding.param(nn.initializers.normal(c.init_std), axes),
                  bias_init=sharding.param(nn.initializers.zeros, axes[1:]), name=name)


@register("head", "mlm")
class MLMHead(nn.Module):
  config: ModelConfig
  tie_embeddings: bool = True
  activation: str = "gelu"

  @nn.compact
  def __call__(self, hidden: jax.Array, *, mask: jax.Array | None = None,
               embedding: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    c = self.config
    h = activation(self.activation)(_dense(c, c.dim, ("embed", "mlp"), "transform")(hidden))
    h = c.build("norm", name="norm")(h)
    if self.tie_embeddings:
      bias = self.param("bias", sharding.param(nn.initializers.zeros, ("vocab",)),
                        (c.vocab_size,), c.params_dtype)
      logits = jnp.einsum("bld,vd->blv", h.astype(jnp.float32),
                          embedding.astype(jnp.float32)) + bias
    else:
      logits = _dense(c, c.vocab_size, ("embed", "vocab"), "decoder", jnp.float32)(h)
    return sharding.constrain(logits, sharding.LOGITS)


@register("head", "classification")
class ClassificationHead(nn.Module):
  config: ModelConfig
  num_classes: int = 2
  pooling: str = "cls"
  pooler: bool = True  # BERT's dense + tanh on the pooled vector

  @nn.compact
  def __call__(self, hidden: jax.Array, *, mask: jax.Array | None = None,
               embedding: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
    c = self.config
    x = pool(hidden, mask, self.pooling)
    if self.pooler:
      x = jnp.tanh(_dense(c, c.dim, ("embed", "mlp"), "pooler")(x))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    return _dense(c, self.num_classes, ("embed", "classes"), "classifier", jnp.float32)(x)
