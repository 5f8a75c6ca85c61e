"""Kernelized (linear-time) attention: softmax(q k^T) is replaced by phi(q) phi(k)^T, so
attention is computed as phi(q) (phi(k)^T v) without ever forming the n x n matrix.

- `linear`: phi(x) = elu(x) + 1 (Katharopoulos et al. 2020, "Transformers are RNNs: Fast
  Autoregressive Transformers with Linear Attention"). Not an approximation of softmax; a
  different, always-positive similarity.
- `performer`: FAVOR+ positive orthogonal random features, an unbiased estimate of the softmax
  kernel exp(q.k / sqrt(d)) (Choromanski et al. 2021, "Rethinking Attention with Performers").

Both cost O(n * features * head_dim) time and O(n * (features + head_dim)) memory, and compute
in float32 whatever the model's compute dtype (the normaliser is a sum over the whole length).

Padding: padded keys get all-zero features, so they add nothing to phi(k)^T v nor to the
normaliser. Packed segments are kept apart exactly by per-segment sums: the distinct segment
ids of a row are ranked (0, 1, ...) and each query reads only the sums of its own rank. The
number of ranks is a static bound, `max_segments` (clamped to the length: at or above it every
row is exact); when packing more segments than that, the tokens of the extra segments get NaN
outputs, so an overflow surfaces as a NaN loss rather than as silent leakage between sequences.
Packed rows cost `max_segments` times the unpacked sums. There is no attention matrix, so
`model.attention_dropout_rate` does not apply to these variants.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from encoders.attention.base import Attention
from encoders.errors import ConfigError
from encoders.registry import register


def segment_onehot(segment_ids: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """([batch, length, num] float one-hot of each token's segment rank, [batch, length] bool
  overflow): ranks number the distinct ids of a row in increasing order."""
  order = jnp.argsort(segment_ids, axis=-1, stable=True)
  ids = jnp.take_along_axis(segment_ids, order, axis=-1)
  starts = jnp.concatenate([jnp.zeros_like(ids[:, :1]), (ids[:, 1:] != ids[:, :-1])], axis=-1)
  ranks = jnp.take_along_axis(jnp.cumsum(starts, axis=-1), jnp.argsort(order, axis=-1), axis=-1)
  return jax.nn.one_hot(ranks, num, dtype=jnp.float32), ranks >= num


class KernelizedAttention(Attention):
  """Shared linear-time `attend`; subclasses define `features(x, is_query, mask)`."""
  max_segments: int = 16  # distinct packed segments per row kept apart exactly (see module doc)

  def features(self, x: jax.Array, is_query: bool, mask: jax.Array | None) -> jax.Array:
    """x: [batch, length, heads, head_dim] float32 -> positive [batch, length, heads, m]."""
    raise TypeError(f"{type(self).__name__} is abstract: define features()")

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    del deterministic  # no attention matrix to drop out
    name = self.registry_name
    if bias is not None:
      raise ConfigError(f"model.position.name={self.config.spec('position')['name']!r} adds an "
                       f"attention bias, which {name} attention cannot apply; "
                       "use rope/learned/sinusoidal")
    if self.max_segments <= 0:
      raise ConfigError(f"model.attention.max_segments={self.max_segments} must be positive")
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    phi_q = self.features(q, True, None)
    phi_k = self.features(k, False, mask)
    if mask is not None:
      phi_k = jnp.where(mask[:, :, None, None], phi_k, 0.0)
    if segment_ids is None:
      kv = jnp.einsum("bnhm,bnhd->bhmd", phi_k, v)
      num = jnp.einsum("bnhm,bhmd->bnhd", phi_q, kv)
      den = jnp.einsum("bnhm,bhm->bnh", phi_q, phi_k.sum(axis=1))
    else:
      onehot, overflow = segment_onehot(segment_ids, min(self.max_segments, q.shape[1]))
      kv = jnp.einsum("bng,bnhm,bnhd->bghmd", onehot, phi_k, v)
      num = jnp.einsum("bng,bnhm,bghmd->bnhd", onehot, phi_q, kv)
      den = jnp.einsum("bng,bnhm,bghm->bnh", onehot, phi_q,
                       jnp.einsum("bng,bnhm->bghm", onehot, phi_k))
      num = jnp.where(overflow[:, :, None, None], jnp.nan, num)
    # den == 0 only where a query has no real key at all (then num == 0 too).
    return num / jnp.where(den > 0, den, 1.0)[..., None]


@register("attention", "linear")
class LinearAttention(KernelizedAttention):
  """phi(x) = elu(x) + 1 (Katharopoulos et al. 2020); m = head_dim features."""

  def features(self, x, is_query, mask):
    del is_query, mask
    return jax.nn.elu(x) + 1.0


@functools.lru_cache(maxsize=32)
def orthogonal_features(num_features: int, head_dim: int, seed: int) -> np.ndarray:
  """[num_features, head_dim] rows: blocks of orthonormal rows (QR of Gaussian matrices), each
  row rescaled to the norm of an independent Gaussian vector, so every row is marginally
  N(0, I) while rows within a block are exactly orthogonal (Choromanski et al. 2021, sec. 2.4).
  Q's columns are multiplied by the signs of R's diagonal so that Q is Haar-distributed
  (Mezzadri 2007); without that the kernel estimate is biased (about +2.5% at d = 8)."""
  rng = np.random.default_rng(seed)
  blocks = []
  for _ in range(-(-num_features // head_dim)):
    q, r = np.linalg.qr(rng.standard_normal((head_dim, head_dim)))
    blocks.append((q * np.sign(np.diag(r))).T)
  rows = np.concatenate(blocks)[:num_features]
  norms = np.linalg.norm(rng.standard_normal((num_features, head_dim)), axis=1)
  return (rows * norms[:, None]).astype(np.float32)


@register("attention", "performer")
class PerformerAttention(KernelizedAttention):
  """FAVOR+ (Choromanski et al. 2021): phi(x) = exp(W x - |x|^2 / 2) / sqrt(m) with x = q or k
  scaled by d^-1/4 and W: m positive orthogonal random features, so E[phi(q).phi(k)] =
  exp(q.k / sqrt(d)). The features are fixed (drawn once from `seed`, not trained, no redraw)
  and shared by all heads and layers, as in the reference implementation.

  Stabiliser (as in the reference): each query's features are divided by their max over
  features and all keys' by one max over (real keys, features) per row and head; these factors
  cancel between numerator and normaliser, so the result is unchanged but exp never overflows.
  """
  num_features: int = 256  # m random features; error ~ 1/sqrt(m) (paper: m = d log d)
  seed: int = 0  # draws W; same seed -> same features -> same outputs

  def features(self, x, is_query, mask):
    if self.num_features <= 0:
      raise ConfigError(f"model.attention.num_features={self.num_features} must be positive")
    head_dim = x.shape[-1]
    w = jnp.asarray(orthogonal_features(self.num_features, head_dim, self.seed))
    x = x * head_dim ** -0.25
    proj = jnp.einsum("bnhd,md->bnhm", x, w)
    sq = 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if is_query:
      stab = jnp.max(proj, axis=-1, keepdims=True)
    else:
      real = proj if mask is None else jnp.where(mask[:, :, None, None], proj, -jnp.inf)
      stab = jnp.max(real, axis=(1, 3), keepdims=True)
      stab = jnp.where(jnp.isfinite(stab), stab, 0.0)  # rows without real keys
    return jnp.exp(proj - sq - jax.lax.stop_gradient(stab)) / np.sqrt(self.num_features)
