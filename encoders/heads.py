"""Output heads on top of the encoder's hidden states [batch, length, dim].

- `mlm`: masked-language-model head as in BERT (Devlin et al. 2019): dense -> GELU -> norm ->
  vocabulary projection, tied to the token embeddings by default. With
  `inputs["predict_positions"]` ([batch, P] int) it computes only those positions (BERT's
  `masked_lm_positions`): logits [batch, P, vocab], the same loss for a fraction of the FLOPs.
- `classification`: sequence classification from a pooled vector (`cls`: the first token, as
  BERT; `mean`: the mask-aware average, as Sentence-BERT, Reimers & Gurevych 2019), with BERT's
  optional tanh pooler. With `max_segments` > 0 and `inputs["segment_ids"]` (packed rows,
  Krell et al. 2021) it pools each segment 1..max_segments separately: [batch, max_segments,
  classes] (`cls` = the segment's first token).
- `rtd`: ELECTRA's replaced-token detection (Clark et al. 2020): dense -> GELU -> dense(1),
  one logit per token [batch, length] (is this token replaced?).

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

from encoders import precision, sharding
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


def _dense(c: ModelConfig, features: int, axes, name: str, out_dtype=None) -> nn.Dense:
  """Reads its input in the compute dtype, accumulates in float32, returns `out_dtype`
  (default: the compute dtype)."""
  return nn.Dense(features, dtype=c.compute_dtype, param_dtype=c.params_dtype,
                  kernel_init=sharding.param(nn.initializers.normal(c.init_std), axes),
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
      logits = precision.einsum("bld,vd->blv", h, embedding, c.compute_dtype)
      logits = add_bias(logits, bias.astype(logits.dtype))
    else:
      logits = _dense(c, c.vocab_size, ("embed", "vocab"), "decoder", jnp.float32)(h)
    return sharding.constrain(logits, sharding.LOGITS)


@register("head", "classification")
class ClassificationHead(nn.Module):
  config: ModelConfig
  num_classes: int = 0  # 0 = set by the task from its data (classify); must be > 0 when built
  pooling: str = "cls"
  pooler: bool = True  # BERT's dense + tanh on the pooled vector
  max_segments: int = 0  # > 0: one output per packed segment (given inputs["segment_ids"])
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    if self.num_classes <= 0:
      raise ConfigError(f"model.head.num_classes={self.num_classes} must be positive (the "
                        "classify task sets 0 from its data)")
    if self.max_segments and inputs.get("segment_ids") is not None:
      x = pool_segments(hidden, inputs.get("mask"), inputs["segment_ids"], self.max_segments,
                        self.pooling)
    else:
      x = pool(hidden, inputs.get("mask"), self.pooling)
    if self.pooler:
      x = jnp.tanh(_dense(c, c.dim, ("embed", "mlp"), "pooler")(x))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    return _dense(c, self.num_classes, ("embed", "classes"), "classifier", jnp.float32)(x)


@register("head", "rtd")
class ReplacedTokenDetectionHead(nn.Module):
  """ELECTRA's discriminator head: a replaced/original logit per token, [batch, length]."""
  config: ModelConfig
  activation: str = "gelu"
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    h = activation(self.activation)(_dense(c, c.dim, ("embed", "mlp"), "transform")(hidden))
    return _dense(c, 1, ("embed", None), "logit", jnp.float32)(h)[..., 0]
