"""The one dispatch from an implementation name to the code that runs it (`KERNELS`), with the
XLA engine's semantics (encoders/attention/sparse_engine.py): same masks, global tokens, token
windows and outputs at every real token.

- `splash` and `pallas_gpu` run the layout's blocks (global keys left out); the global keys are
  one more small group merged through the log-sum-exps (inside splash's custom VJP; in XLA
  around `pallas_gpu`), and the global queries' rows are recomputed densely (as the XLA engine
  does). Dense attention is the full pattern: splash's full mask, `pallas_gpu`'s full layout.
- `cudnn`: dense only, through `jax.nn.dot_product_attention` (padding as sequence lengths).

Variants call `block_sparse` or `dense`; `implementation.py` decides which name runs. Under a
mesh, every kernel runs per shard of the batch (and of the heads): `on_shards`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from encoders import sharding, target
from encoders.attention import sparse_engine
from encoders.attention.kernels import pallas_gpu, splash
from encoders.attention.kernels.splash_mask import LayoutMask


def listed_pairs(layout: np.ndarray, block_size: int, heads: int) -> int:
  """Query-key pairs of the blocks a [1 | heads, num_blocks, per_row] layout lists, all heads."""
  listed = int(np.sum(layout >= 0))
  return listed * block_size**2 * (heads if layout.shape[0] == 1 else 1)


def block_sparse(q: jax.Array, k: jax.Array, v: jax.Array, layout: np.ndarray, *,
                 implementation: str, block_size: int, global_tokens: Sequence[int] = (),
                 mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 window_tokens: int | None = None, interpret: bool = False,
                 kernel_block_size: int | None = None) -> jax.Array:
  """`sparse_engine.attention`'s contract (no bias, no dropout) on `implementation`, per shard
  of the current mesh (`on_shards`)."""
  if implementation not in ("splash", "pallas_gpu"):
    raise ValueError(f"no block-sparse kernel {implementation!r}; allowed: splash, pallas_gpu")
  layout = np.asarray(layout)
  pattern = Pattern(layout[None] if layout.ndim == 2 else layout, block_size,
                    np.unique(np.asarray(global_tokens, np.int64)), window_tokens)
  return _run(implementation, q, k, v, pattern, mask, segment_ids, interpret=interpret,
              kernel_block_size=kernel_block_size)


def dense(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str,
          mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
          interpret: bool = False, kernel_block_size: int | None = None) -> jax.Array:
  """Dense attention (`dense_attention_mask`'s semantics) on `implementation`."""
  return _run(implementation, q, k, v, None, mask, segment_ids, interpret=interpret,
              kernel_block_size=kernel_block_size)


class Pattern(NamedTuple):
  """A block-sparse pattern: layout [1 | heads, num_blocks, per_row], sorted global token
  indices, the token window (None: listed blocks count whole)."""
  layout: np.ndarray
  block_size: int
  global_tokens: np.ndarray
  window_tokens: int | None


def _run(implementation, q, k, v, pattern, mask, segment_ids, **options):
  """KERNELS[implementation] per shard, inside a name scope declaring the kernel's attention
  work: the layout's listed pairs, or all n x n for dense (the global keys and rows are XLA
  products, counted as such)."""
  b, n, h, d = q.shape
  pairs = n * n * h if pattern is None else listed_pairs(pattern.layout, pattern.block_size, h)

  def local(q, k, v, mask, segment_ids):
    return KERNELS[implementation](q, k, v, pattern, mask, segment_ids, **options)

  heads_alike = pattern is None or pattern.layout.shape[0] == 1
  with target.kernel_scope(b, d, pairs):
    return on_shards(local, q, k, v, mask, segment_ids, heads_alike=heads_alike)


def _splash_dense_size(n: int, kernel_block_size: int | None) -> tuple[int, int]:
  """(tile, padded length) of dense attention on splash: 512 tokens or the length rounded up
  to splash's 128-token granule, whichever is smaller."""
  block = min(kernel_block_size or 512, -(-n // splash.GRANULE) * splash.GRANULE)
  return block, -(-n // block) * block


def _on_splash(q, k, v, pattern, mask, segment_ids, *, interpret, kernel_block_size):
  n, d = q.shape[1], q.shape[3]
  q = q * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
  if pattern is None:
    block, size = _splash_dense_size(n, kernel_block_size)
    return splash.attention(q, k, v, LayoutMask.full(size), block=block, real=mask,
                            segment_ids=segment_ids, interpret=interpret)
  gidx = pattern.global_tokens
  block = splash.kernel_block(kernel_block_size, pattern.block_size)
  static = LayoutMask.from_layout(pattern.layout, size=-(-n // block) * block,
                                  block_size=pattern.block_size, hidden_keys=gidx,
                                  window_tokens=pattern.window_tokens)
  out = splash.attention(q, k, v, static, block=block, real=mask, segment_ids=segment_ids,
                         global_keys=gidx, interpret=interpret)
  return _with_global_rows(out, q, k, v, gidx, mask, segment_ids)


def _on_pallas_gpu(q, k, v, pattern, mask, segment_ids, *, interpret, kernel_block_size):
  b, n, _, d = q.shape
  if pattern is None:  # the full layout at the kernel's tile
    block = kernel_block_size or 64
    blocks = sparse_engine.num_blocks(n, block)
    pattern = Pattern(np.broadcast_to(np.arange(blocks, dtype=np.int32), (1, blocks, blocks)),
                      block, np.zeros(0, np.int64), None)
  q = q * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
  gidx = pattern.global_tokens
  size = sparse_engine.num_blocks(n, pattern.block_size) * pattern.block_size
  real = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  real = jnp.pad(real, ((0, 0), (0, size - n)))
  segments = jnp.zeros((b, n), jnp.int32) if segment_ids is None else segment_ids
  segments = jnp.pad(segments.astype(jnp.int32), ((0, 0), (0, size - n)), constant_values=-1)
  tokens = np.arange(size)
  key_ok = (tokens < n) & ~np.isin(tokens, gidx)

  def padded(x):
    return jnp.pad(x, ((0, 0), (0, size - n), (0, 0), (0, 0)))

  out, lse = pallas_gpu.attention(padded(q), padded(k), padded(v), pattern.layout,
                                  block_size=pattern.block_size, real=real, segments=segments,
                                  key_ok=key_ok, window_tokens=pattern.window_tokens,
                                  interpret=interpret)
  if gidx.size:
    out = _merge(out, lse, *_global_keys(padded(q), k[:, gidx], v[:, gidx], gidx, real,
                                         segments))
  return _with_global_rows(out[:, :n].astype(q.dtype), q, k, v, gidx, mask, segment_ids)


def _with_global_rows(out, q, k, v, gidx, mask, segment_ids):
  """`out` with the global queries' rows recomputed densely over all keys (pre-scaled q), as
  the XLA engine computes them."""
  if not gidx.size:
    return out
  rows = sparse_engine.global_rows(q, k, v, gidx, mask, segment_ids, None, 0.0, None)
  return out.at[:, gidx].set(rows.astype(q.dtype))


def _on_cudnn(q, k, v, pattern, mask, segment_ids, *, interpret, kernel_block_size):
  """cuDNN's fused attention, dense and unpacked only (`implementation.problems`): padding as
  key lengths (right padding, as every pipeline here produces)."""
  del pattern, segment_ids, interpret, kernel_block_size
  lengths = None if mask is None else jnp.sum(mask, axis=1, dtype=jnp.int32)
  return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                      implementation="cudnn")


# implementation -> function(q, k, v, pattern (None: dense), mask, segment_ids, *, interpret,
# kernel_block_size), run per shard
KERNELS = {"splash": _on_splash, "pallas_gpu": _on_pallas_gpu, "cudnn": _on_cudnn}


def on_shards(fn, q, k, v, mask, segment_ids, *, heads_alike: bool):
  """`fn(q, k, v, mask, segment_ids)` run per shard of the current mesh (`jax.shard_map`): the
  batch split as activations are (`act_batch`), the heads over `act_heads`'s axes where every
  head has the same pattern. XLA cannot partition a Pallas call (Mosaic refuses; a Triton call
  gets its operands gathered, so every device would compute the whole batch). Outside a mesh, or
  where no axis divides, `fn` runs as it is."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn(q, k, v, mask, segment_ids)

  def axes(logical: str, size: int) -> tuple[str, ...]:
    names = tuple(a for a in sharding.mesh_axes(logical) if mesh.shape.get(a, 1) > 1)
    return names if names and size % math.prod(mesh.shape[a] for a in names) == 0 else ()

  batch = axes("act_batch", q.shape[0])
  heads = axes("act_heads", q.shape[2]) if heads_alike else ()
  if not batch and not heads:
    return fn(q, k, v, mask, segment_ids)
  qkv = P(batch or None, None, heads or None, None)
  rows = P(batch or None, None)
  extras = {name: x for name, x in (("mask", mask), ("segment_ids", segment_ids))
            if x is not None}

  def local(q, k, v, extras):
    return fn(q, k, v, extras.get("mask"), extras.get("segment_ids"))

  return jax.shard_map(local, mesh=mesh, in_specs=(qkv, qkv, qkv, {n: rows for n in extras}),
                       out_specs=qkv, check_vma=False)(q, k, v, extras)


def _global_keys(q, kg, vg, gidx, real, segments):
  """Every query over the global keys alone: (out [b, n, h, d] f32, lse f32 [b, h, n])."""
  scores = jnp.einsum("bqhd,bghd->bhqg", q, kg, preferred_element_type=jnp.float32)
  ok = sparse_engine.pair_ok(real, segments, np.arange(q.shape[1])[None], gidx[None])
  row_max = jnp.max(jnp.where(ok, scores, -jnp.inf), axis=-1)
  row_max = jax.lax.stop_gradient(jnp.maximum(row_max, pallas_gpu.NEG))
  p = jnp.exp(jnp.where(ok, scores - row_max[..., None], -jnp.inf))
  total = jnp.sum(p, axis=-1)
  safe = jnp.where(total > 0, total, 1.0)
  out = jnp.einsum("bhqg,bghd->bqhd", p.astype(vg.dtype), vg, preferred_element_type=jnp.float32)
  out = out / safe.transpose(0, 2, 1)[..., None]
  return out, jnp.where(total > 0, row_max + jnp.log(safe), pallas_gpu.NEG)


def _merge(out_a, lse_a, out_b, lse_b):
  """Softmax over the union of two disjoint key groups from each group's normalised output
  and log-sum-exp ([b, n, h, d], [b, h, n])."""
  lse = jnp.logaddexp(lse_a, lse_b)

  def weight(part):
    return jnp.exp(part - lse).transpose(0, 2, 1)[..., None]

  return out_a.astype(jnp.float32) * weight(lse_a) + out_b * weight(lse_b)
