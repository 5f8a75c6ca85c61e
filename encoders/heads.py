"""Output heads on top of the encoder's hidden states [batch, length, dim].

- `mlm`: masked-language-model head as in BERT (Devlin et al. 2019): dense -> GELU -> norm ->
  vocabulary projection, tied to the token embeddings by default. With
  `inputs["predict_positions"]` ([batch, P] int) it computes only those positions (BERT's
  `masked_lm_positions`): logits [batch, P, vocab], the same loss for a fraction of the FLOPs.
- `classification`: sequence classification from a pooled vector (`cls`: the first token, as
  BERT; `mean`: the mask-aware average, as Sentence-BERT, Reimers & Gurevych 2019), with BERT's
  optional tanh pooler.

Interface: `head(hidden, *, inputs, embedding=None, all_layers=None, deterministic=True)`;
`inputs` is the model's input dict (`mask`, `segment_ids`, `predict_positions`, ...),
`embedding` the token embedding table (for tied output layers) and `all_layers` the stacked
[num_layers + 1, batch, length, dim] block outputs, passed only to heads whose class sets
`reads_all_layers = True`. Heads return float32 outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

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
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    if "predict_positions" in inputs:
      hidden = jnp.take_along_axis(hidden, inputs["predict_positions"][..., None], axis=1)
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
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    x = pool(hidden, inputs.get("mask"), self.pooling)
    if self.pooler:
      x = jnp.tanh(_dense(c, c.dim, ("embed", "mlp"), "pooler")(x))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    return _dense(c, self.num_classes, ("embed", "classes"), "classifier", jnp.float32)(x)
