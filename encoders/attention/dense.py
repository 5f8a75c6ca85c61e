"""Dense softmax attention, the reference every efficient variant is compared against.

Vaswani et al. 2017, "Attention Is All You Need". Uses `jax.nn.dot_product_attention` (which
dispatches to cuDNN's fused kernel with `implementation="cudnn"` on GPU); with attention dropout
active in training it falls back to an explicit softmax so weights can be dropped. A position
bias (ALiBi, T5) is materialised for all [heads, q, k] pairs and added to the logits.

With a low-precision compute dtype (bfloat16) and no cuDNN, the explicit path runs too: both
products read bf16 operands and accumulate in float32 (encoders/precision.py), the softmax is
float32 (jax's XLA path would return the weights-times-values product in bf16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from encoders import precision
from encoders.attention.base import Attention, dense_attention_mask
from encoders.errors import ConfigError
from encoders.registry import register

IMPLEMENTATIONS = (None, "xla", "cudnn")


@register("attention", "dense")
class DenseAttention(Attention):
  implementation: str | None = None  # None = JAX's default (XLA); "cudnn" on GPU

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    if self.implementation not in IMPLEMENTATIONS:
      raise ConfigError(f"model.attention.implementation={self.implementation!r}; "
                       f"allowed: {IMPLEMENTATIONS}")
    allowed = dense_attention_mask(mask, segment_ids, q.shape[1])
    if bias is not None:
      index = np.arange(q.shape[1])[None]
      bias = bias(index, index)  # [batch, heads, q, k]
    rate = self.config.attention_dropout_rate
    dropout = not deterministic and rate > 0.0
    dtype = self.config.compute_dtype
    if not dropout and (dtype == jnp.float32 or self.implementation == "cudnn"):
      return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=allowed,
                                          implementation=self.implementation)
    scores = precision.einsum("bqhd,bkhd->bhqk", q, k, dtype) / jnp.sqrt(q.shape[-1])
    if bias is not None:
      scores = scores + bias
    if allowed is not None:
      scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, weights.shape)
      weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
    return precision.einsum("bhqk,bkhd->bqhd", weights, v, dtype).astype(dtype)
