"""Dense and block-sparse attention through the accelerator kernels, with the XLA engine's
semantics (encoders/attention/blocksparse.py): same masks, global tokens, token windows and
outputs at every real token.

- Both kernels run the layout's blocks (global keys left out); the global keys are one more
  small group, computed in XLA and merged through the log-sum-exps; the global queries' rows are
  recomputed densely (as the XLA engine does).

Under a mesh, both run per shard of the batch (and of the heads): `on_shards`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from encoders import sharding, target
from encoders.attention import blocksparse
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
  """`blocksparse.attention`'s contract (no bias, no dropout) on `implementation`, per shard
  of the current mesh (`on_shards`)."""
  b, n, h, d = q.shape
  if implementation not in ("splash", "pallas_gpu"):
    raise ValueError(f"no kernel path for implementation {implementation!r}")
  layout = np.asarray(layout)
  layout = layout[None] if layout.ndim == 2 else layout
  gidx = np.unique(np.asarray(global_tokens, np.int64))
  pairs = listed_pairs(layout, block_size, h)
  if implementation == "splash":
    block = splash.kernel_block(kernel_block_size, block_size)
    pairs += 2 * gidx.size * (-(-n // block) * block) * h  # splash: global rows and columns

  def local(q, k, v, mask, segment_ids):
    q = q * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
    if implementation == "splash":
      return _splash_layout(q, k, v, layout, mask, segment_ids, block_size=block_size,
                            gidx=gidx, window_tokens=window_tokens, interpret=interpret,
                            kernel_block_size=kernel_block_size)
    return _pallas_gpu_layout(q, k, v, layout, mask, segment_ids, block_size=block_size,
                              gidx=gidx, window_tokens=window_tokens, interpret=interpret)

  with target.kernel_scope(b, d, pairs):
    return on_shards(local, q, k, v, mask, segment_ids, heads_alike=layout.shape[0] == 1)


def _splash_layout(q, k, v, layout, mask, segment_ids, *, block_size, gidx, window_tokens,
                   interpret, kernel_block_size):
  n = q.shape[1]
  block = splash.kernel_block(kernel_block_size, block_size)
  static = LayoutMask.from_layout(layout, size=-(-n // block) * block, block_size=block_size,
                                  hidden_keys=gidx, window_tokens=window_tokens)
  out = splash.attention(q, k, v, static, block=block, real=mask, segment_ids=segment_ids,
                         global_keys=gidx, interpret=interpret)
  if gidx.size:
    rows = blocksparse.global_rows(q, k, v, gidx, mask, segment_ids, None, 0.0, None)
    out = out.at[:, gidx].set(rows.astype(q.dtype))
  return out


def _pallas_gpu_layout(q, k, v, layout, mask, segment_ids, *, block_size, gidx,
                       window_tokens, interpret):
  b, n = q.shape[:2]
  size = blocksparse.num_blocks(n, block_size) * block_size
  real = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  real = jnp.pad(real, ((0, 0), (0, size - n)))
  segments = jnp.zeros((b, n), jnp.int32) if segment_ids is None else segment_ids
  segments = jnp.pad(segments.astype(jnp.int32), ((0, 0), (0, size - n)), constant_values=-1)
  tokens = np.arange(size)
  key_ok = (tokens < n) & ~np.isin(tokens, gidx)

  def padded(x):
    return jnp.pad(x, ((0, 0), (0, size - n), (0, 0), (0, 0)))

  out, lse = pallas_gpu.attention(padded(q), padded(k), padded(v), layout,
                                  block_size=block_size, real=real, segments=segments,
                                  key_ok=key_ok, window_tokens=window_tokens,
                                  interpret=interpret)
  if gidx.size:
    out = _merge(out, lse, *_global_keys(padded(q), k[:, gidx], v[:, gidx], gidx, real,
                                         segments))
  out = out[:, :n].astype(q.dtype)
  if gidx.size:
    rows = blocksparse.global_rows(q, k, v, gidx, real, segments, None, 0.0, None)
    out = out.at[:, gidx].set(rows.astype(q.dtype))
  return out


def dense(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str,
          mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
          interpret: bool = False, kernel_block_size: int | None = None) -> jax.Array:
  """Dense attention (`dense_attention_mask`'s semantics) on `splash` or `pallas_gpu`."""
  b, n, h, d = q.shape
  if implementation == "splash":
    block = min(kernel_block_size or 512, -(-n // splash.GRANULE) * splash.GRANULE)
    size = -(-n // block) * block

    def local(q, k, v, mask, segment_ids):
      return splash.attention(q * jnp.asarray(1.0 / np.sqrt(d), q.dtype), k, v,
                              LayoutMask.full(size), block=block, real=mask,
                              segment_ids=segment_ids, interpret=interpret)

    with target.kernel_scope(b, d, size * size * h):
      return on_shards(local, q, k, v, mask, segment_ids, heads_alike=True)
  block = kernel_block_size or 64
  blocks = blocksparse.num_blocks(n, block)
  layout = np.broadcast_to(np.arange(blocks, dtype=np.int32), (1, blocks, blocks))
  return block_sparse(q, k, v, layout, implementation=implementation, block_size=block,
                      mask=mask, segment_ids=segment_ids, interpret=interpret)


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
  ok = blocksparse.pair_ok(real, segments, np.arange(q.shape[1])[None], gidx[None])
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
