"""Dense softmax attention, the reference every efficient variant is compared against.

Vaswani et al. 2017, "Attention Is All You Need". `implementation` (encoders/attention/
implementation.py) picks the code: `xla` uses `jax.nn.dot_product_attention`, or, with
attention dropout active in training, an explicit softmax so weights can be dropped; `cudnn`
is cuDNN's fused flash attention (GPU, bf16/fp16: padding through `key_value_seq_lengths`, which
assumes right padding, as every pipeline here produces; cuDNN through jax takes no segment ids,
so `auto` runs packed rows, and float32, on `pallas_gpu` and says why);
`splash` (TPU) and `pallas_gpu` run the accelerator kernels with a full mask. A position bias
(ALiBi, T5) is materialised for all [heads, q, k] pairs and added to the logits (`xla` only).

With a low-precision compute dtype (bfloat16) the explicit path runs too: both products read
bf16 operands and accumulate in float32 (encoders/precision.py), the softmax is float32 (jax's
XLA path would return the weights-times-values product in bf16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from encoders import precision
from encoders.attention import implementation
from encoders.attention.base import dense_attention_mask
from encoders.attention.kernels import dispatch
from encoders.registry import register


@register("attention", "dense")
class DenseAttention(implementation.KernelAttention):
  SUPPORTED = ("xla", "cudnn", "splash", "pallas_gpu")
  PREFERRED = {"tpu": ("splash",), "gpu": ("cudnn", "pallas_gpu")}

  def kernel_tile(self):
    return self.kernel_block_size or 64

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    chosen = self.chosen_implementation(q, bias=bias, segment_ids=segment_ids)
    if chosen != "xla":
      return dispatch.dense(q, k, v, implementation=chosen, mask=mask,
                                    segment_ids=segment_ids, interpret=self.interpret,
                                    kernel_block_size=self.kernel_block_size)
    allowed = dense_attention_mask(mask, segment_ids, q.shape[1])
    if bias is not None:
      index = np.arange(q.shape[1])[None]
      bias = bias(index, index)  # [batch, heads, q, k]
    rate = self.config.attention_dropout_rate
    dropout = not deterministic and rate > 0.0
    dtype = self.config.compute_dtype
    if not dropout and dtype == jnp.float32:
      return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=allowed,
                                          implementation="xla")
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
