"""What every attention variant shares: q/k/v/o projections, rotary and bias positions, masks.

A variant subclasses `Attention` and implements only `attend(q, k, v, ...)`, i.e. how the
scores are formed and normalised. The interface seen by a Block is

    y = attention(x, mask=None, segment_ids=None, positions=None, deterministic=True)

with x, y: [batch, length, dim]; `mask`: [batch, length] True for real tokens; `segment_ids`:
[batch, length] ints, tokens attend only within their segment (packed sequences); `positions`:
[batch, length] ints (restarting per packed segment) used by rotary and bias position variants.

`attend` is always called as `attend(q, k, v, mask=, segment_ids=, deterministic=, bias=)`.
`bias` is None unless the position variant acts on the attention logits (`where == "bias"`:
ALiBi, T5 relative buckets); it is then a callable

    bias(q_index, k_index) -> f32 [batch, heads, ..., Q, K]

taking static int token indices q_index [1 | heads, ..., Q] and k_index [1 | heads, ..., K]
(middle dims broadcast) and returning the additive logit bias of those pairs, so dense attention
asks for all pairs and a sparse one only for the pairs it keeps. Variants that cannot add a bias
to their logits (kernelized, low-rank) raise a ConfigError when it is not None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import initializers, precision, sharding

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def dense_attention_mask(mask: jax.Array | None, segment_ids: jax.Array | None,
                         length: int) -> jax.Array | None:
  """Boolean [batch, 1, q, k] mask: key is real and in the query's segment.

  Padding queries may attend anywhere (their outputs are ignored downstream), so no row is
  ever fully masked and no NaN can appear.
  """
  if mask is None and segment_ids is None:
    return None
  allowed = None
  if mask is not None:
    allowed = jnp.broadcast_to(mask[:, None, :], (mask.shape[0], length, length))
  if segment_ids is not None:
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = same if allowed is None else allowed & same
  if mask is not None:
    allowed = allowed | ~mask[:, :, None]
  return allowed[:, None, :, :]


def index_bias(position_bias: nn.Module,
               positions: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The `bias` callable passed to `attend`: token indices -> positions -> logit bias."""

  def bias(q_index, k_index):
    return position_bias(positions[:, q_index], positions[:, k_index])

  return bias


class Projection(nn.Module):
  """Einsum projection [..., *in_shape] -> [..., *out_shape] with logical axes.

  (nn.DenseGeneral initialises a flattened kernel, which breaks logical constraints on
  multi-axis kernels inside a mesh; this keeps the kernel's real shape throughout.)
  """
  config: ModelConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]
  role: str = "in"  # in | out (writes into the residual stream; encoders/initializers.py)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    kernel = self.param(
        "kernel", sharding.param(initializers.weight(c, self.role), self.in_axes + self.out_axes),
        self.in_shape + self.out_shape, c.params_dtype)
    n_in = len(self.in_shape)
    letters = "abcdefgh"
    lhs, rhs = letters[:n_in], letters[n_in:n_in + len(self.out_shape)]
    y = precision.einsum(f"...{lhs},{lhs}{rhs}->...{rhs}", x, kernel, c.compute_dtype)
    if c.use_bias:  # model.use_bias=False: no bias (ModernBERT, PaLM)
      y = y + self.param("bias", sharding.param(nn.initializers.zeros, self.out_axes),
                         self.out_shape, c.params_dtype)
    return y.astype(c.compute_dtype)


class Attention(nn.Module):
  """Multi-head attention skeleton (Vaswani et al. 2017); subclasses define `attend`.

  `supports_segments`: False for variants that mix information along the whole length
  (low-rank projections), which therefore cannot keep packed sequences apart; they raise on
  `segment_ids` instead of silently leaking across segments.
  """
  config: ModelConfig
  supports_segments = True

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None,
             segment_ids: jax.Array | None, deterministic: bool,
             bias: Callable[..., jax.Array] | None = None) -> jax.Array:
    """q, k, v: [batch, length, heads, head_dim] -> [batch, length, heads, head_dim]."""
    raise TypeError(f"{type(self).__name__} is abstract: an attention variant defines attend()")

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    heads, head_dim = c.num_heads, c.resolved_head_dim

    def project(name: str) -> jax.Array:
      y = Projection(c, (c.dim,), (heads, head_dim), ("embed",), ("heads", "kv"), name=name)(x)
      return sharding.constrain(y, sharding.HEADS)

    q, k, v = project("query"), project("key"), project("value")
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    where, bias = c.variant_class("position").where, None
    if where == "qk":
      q, k = c.build("position", name="rotary")(q, k, positions)
    elif where == "bias":  # built here, so each layer owns its bias parameters
      bias = index_bias(c.build("position", name="position_bias"), positions)
    y = self.attend(q, k, v, mask=mask, segment_ids=segment_ids, deterministic=deterministic,
                    bias=bias)
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.HEADS)
    out = Projection(c, (heads, head_dim), (c.dim,), ("heads", "kv"), ("embed",), "out",
                     name="out")(y)
    return sharding.constrain(out, sharding.HIDDEN)
