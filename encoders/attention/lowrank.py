"""Low-rank attention: keys and values are summarised along the length before softmax.

- `linformer`: learned projections E, F [max_length, k] map the n keys and values to k rows
  (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").
- `nystrom`: Nystrom approximation of the softmax matrix from segment-mean landmarks
  (Xiong et al. 2021, "Nystromformer: A Nystrom-Based Algorithm for Approximating
  Self-Attention").

Both cost O(n * k * head_dim). Each summary mixes tokens from the whole row, so packed segments
cannot be kept apart (`supports_segments = False`: `segment_ids` is a one-line error). Padded
tokens never enter a summary, so outputs at real positions do not depend on padding. `k` and
`num_landmarks` are clamped to `model.max_length` and to the input length respectively
(summarising n keys into more than n rows is no longer low rank); this is what lets the defaults
run on short inputs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.attention.base import Attention
from encoders.errors import ConfigError
from encoders.registry import register

NEG = jnp.finfo(jnp.float32).min


def check_inputs(module: Attention, segment_ids, bias) -> None:
  """One-line errors for what low-rank variants cannot do."""
  name = module.registry_name
  if bias is not None:
    raise ConfigError(f"model.position.name={module.config.spec('position')['name']!r} adds an "
                     f"attention bias, which {name} attention cannot apply; "
                     "use rope/learned/sinusoidal")
  if segment_ids is not None:
    raise ConfigError(f"model.attention.name={name!r} mixes the whole length and cannot keep "
                     "packed segments apart; pass no segment_ids (do not pack) or use dense")


@register("attention", "linformer")
class LinformerAttention(Attention):
  """softmax(q (E^T k)^T / sqrt(d)) (F^T v), E and F learned [max_length, k] and shared by all
  heads (the paper's headwise sharing). Inputs shorter than `model.max_length` use the first n
  rows; longer ones are an error. Padded keys and values are zeroed before projection.
  `model.attention_dropout_rate` drops the [n, k] attention weights, as in the paper."""
  k: int = 256  # projected length (paper: 128-256); clamped to model.max_length
  supports_segments = False

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    check_inputs(self, segment_ids, bias)
    c, n = self.config, q.shape[1]
    if self.k <= 0:
      raise ConfigError(f"model.attention.k={self.k} must be positive")
    if n > c.max_length:
      raise ConfigError(f"model.max_length={c.max_length} is shorter than the input ({n} tokens); "
                       "linformer's projections have max_length rows")
    rank = min(self.k, c.max_length)
    # Scale 1/sqrt(max_length), as torch's nn.Linear(n, k) init in the reference code.
    init = sharding.param(nn.initializers.normal(c.max_length ** -0.5), ("position", None))
    e = self.param("e", init, (c.max_length, rank), c.params_dtype)[:n].astype(k.dtype)
    f = self.param("f", init, (c.max_length, rank), c.params_dtype)[:n].astype(v.dtype)
    if mask is not None:
      k = jnp.where(mask[:, :, None, None], k, 0)
      v = jnp.where(mask[:, :, None, None], v, 0)
    keys = jnp.einsum("nr,bnhd->brhd", e, k)
    values = jnp.einsum("nr,bnhd->brhd", f, v)
    scores = jnp.einsum("bqhd,brhd->bhqr", q, keys).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(scores, axis=-1)
    rate = c.attention_dropout_rate
    if not deterministic and rate > 0.0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, weights.shape)
      weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
    return jnp.einsum("bhqr,brhd->bqhd", weights.astype(v.dtype), values)


def iterative_pinv(a: jax.Array, iterations: int) -> jax.Array:
  """Moore-Penrose pseudo-inverse of [..., m, m] non-negative `a` by the iteration of Razavi et
  al. 2014, as in Nystromformer: Z0 = a^T / (max col sum * max row sum),
  Z <- Z (13 I - aZ (15 I - aZ (7 I - aZ))) / 4. Zero rows/columns stay zero."""
  norm = (jnp.max(jnp.sum(a, axis=-2), axis=-1) * jnp.max(jnp.sum(a, axis=-1), axis=-1))
  z = jnp.swapaxes(a, -1, -2) / jnp.where(norm > 0, norm, 1.0)[..., None, None]
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


@register("attention", "nystrom")
class NystromAttention(Attention):
  """softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V with q, k scaled by d^-1/4 and
  m landmarks Q~, K~: means of m contiguous segments of the real (unpadded) tokens. When the
  number of real tokens L is not a multiple of m, real token r goes to segment floor(r m / L),
  so segment sizes differ by at most one; when L < m, empty landmarks are left out exactly.
  (The paper's optional depthwise-convolution skip on V is not included.) Computes in float32;
  `model.attention_dropout_rate` does not apply (no n x n weights)."""
  num_landmarks: int = 64  # m (paper: 32-64); clamped to the input length
  pinv_iterations: int = 6  # iterations of the pseudo-inverse (paper: 6)
  supports_segments = False

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    del deterministic
    check_inputs(self, segment_ids, bias)
    for field in ("num_landmarks", "pinv_iterations"):
      if getattr(self, field) <= 0:
        raise ConfigError(f"model.attention.{field}={getattr(self, field)} must be positive")
    b, n, _, d = q.shape
    m = min(self.num_landmarks, n)
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    q, k = q * d ** -0.25, k * d ** -0.25
    real = jnp.ones((b, n), bool) if mask is None else mask
    count = jnp.sum(real, axis=-1, keepdims=True)
    segment = (jnp.cumsum(real, axis=-1) - 1) * m // jnp.maximum(count, 1)
    assign = jax.nn.one_hot(segment, m, dtype=jnp.float32) * real[..., None]  # [b, n, m]
    sizes = jnp.sum(assign, axis=1)  # [b, m]
    present = sizes > 0
    q_l, k_l = (jnp.einsum("bnm,bnhd->bmhd", assign, t) / jnp.maximum(sizes, 1)[..., None, None]
                for t in (q, k))

    def softmax(scores, allowed):
      return jax.nn.softmax(jnp.where(allowed, scores, NEG), axis=-1)

    cols = present[:, None, None, :]
    kernel1 = softmax(jnp.einsum("bnhd,bmhd->bhnm", q, k_l), cols)
    kernel2 = jnp.where(present[:, None, :, None] & cols,
                        softmax(jnp.einsum("bmhd,blhd->bhml", q_l, k_l), cols), 0.0)
    kernel3 = softmax(jnp.einsum("bmhd,bnhd->bhmn", q_l, k), real[:, None, None, :])
    summary = iterative_pinv(kernel2, self.pinv_iterations) @ (kernel3 @ v.transpose(0, 2, 1, 3))
    return jnp.einsum("bhnm,bhmd->bnhd", kernel1, summary)
