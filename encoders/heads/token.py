"""Token-level heads, one output per position.

- `mlm`: masked-language-model head as in BERT (Devlin et al. 2019): dense -> GELU -> norm ->
  vocabulary projection, tied to the token embeddings by default. `transform_bias` /
  `decoder_bias`: biases of the dense and of the vocabulary projection (ModernBERT, Warner et
  al. 2024: none on the dense, a decoder bias). With
  `inputs["predict_positions"]` ([batch, P] int) it computes only those positions (BERT's
  `masked_lm_positions`): logits [batch, P, vocab], the same loss for a fraction of the FLOPs.
- `rtd`: ELECTRA's replaced-token detection (Clark et al. 2020): dense -> GELU -> dense(1),
  one logit per token [batch, length] (is this token replaced?).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import precision, sharding
from encoders.ffn import activation
from encoders.linear import dense
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig


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
  transform_bias: bool = True
  decoder_bias: bool = True
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    if "predict_positions" in inputs:
      hidden = jnp.take_along_axis(hidden, inputs["predict_positions"][..., None], axis=1)
    transform = dense(c, c.embed_width, ("embed", "mlp"), "transform", use_bias=self.transform_bias,
                      role="out")
    h = c.build("norm", name="norm")(activation(self.activation)(transform(hidden)))
    if self.tie_embeddings:
      logits = precision.einsum("bld,vd->blv", h, embedding, c.compute_dtype)
      if self.decoder_bias:
        bias = self.param("bias", sharding.param(nn.initializers.zeros, ("vocab",)),
                          (c.vocab_size,), c.params_dtype)
        logits = add_bias(logits, bias.astype(logits.dtype))
    else:
      logits = dense(c, c.vocab_size, ("embed", "vocab"), "decoder", out_dtype=jnp.float32,
                     use_bias=self.decoder_bias)(h)
    return sharding.constrain(logits, sharding.LOGITS)


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
    h = activation(self.activation)(dense(c, c.dim, ("embed", "mlp"), "transform")(hidden))
    return dense(c, 1, ("embed", None), "logit", out_dtype=jnp.float32)(h)[..., 0]
