"""Our attention layouts on TPU splash attention (`jax.experimental.pallas.ops.tpu.
splash_attention`): block-sparse flash attention whose kernels skip the all-masked blocks of a
static mask and apply the partial ones (MaxText's attention kernel on TPU).

The static mask comes from our layout (`LayoutMask`, one per head, a `MultiHeadMask` when the
layout is per head, as BigBird's random blocks): a query sees the key blocks its block row lists
(with a token-level window, only keys within `window_tokens` in the blocks that window reaches),
and global tokens are full rows and columns. Splash evaluates the mask lazily block by block at
trace time and stores only the partial blocks. Padding and packing go through `SegmentIds`:
a real token's id is its segment, padding gets -1 and the internal padding up to the kernel's
block multiple -2, so a real query sees real keys of its segment (a padding query sees the
padding; its output is ignored, as everywhere). Batch: `vmap` (splash has no batch axis).

Splash does not check for a query row with no allowed key (it returns a mean of values there);
our XLA engine returns 0. Rows whose static mask lacks their own position are the only ones that
can end up empty, so those (none for the registered layouts) are checked against the segments
and zeroed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_mask_info as mask_info,
)

GRANULE = 128  # splash's kv compute blocks are multiples of 128 tokens


@dataclasses.dataclass(frozen=True)
class LayoutMask(masks.Mask):
  """The static mask of one head's block layout plus global tokens, evaluated lazily.

  `blocks`: bytes of a bool [num_blocks, num_blocks] matrix, query block -> key block listed.
  """
  size: int  # padded length (rows and columns)
  blocks: bytes
  num_blocks: int
  block_size: int
  global_tokens: tuple[int, ...] = ()
  window_tokens: int | None = None

  @property
  def shape(self) -> tuple[int, int]:
    return (self.size, self.size)

  @functools.cached_property
  def _table(self) -> np.ndarray:
    return np.frombuffer(self.blocks, bool).reshape(self.num_blocks, self.num_blocks)

  def __getitem__(self, idx) -> np.ndarray:
    rows, cols = (np.arange(self.size)[i] for i in idx)
    r, c = np.atleast_1d(rows)[:, None], np.atleast_1d(cols)[None, :]
    last = self.num_blocks - 1
    rb, cb = np.minimum(r // self.block_size, last), np.minimum(c // self.block_size, last)
    out = self._table[rb, cb]
    if self.window_tokens is not None:
      reach = -(-self.window_tokens // self.block_size)
      out = out & ((np.abs(r - c) <= self.window_tokens) | (np.abs(rb - cb) > reach))
    if self.global_tokens:
      out = out | np.isin(r, self.global_tokens) | np.isin(c, self.global_tokens)
    return out.reshape(np.shape(rows) + np.shape(cols))

  def diagonal(self, n: int) -> np.ndarray:
    """Bool [n]: token i may attend to itself (always inside a window)."""
    i = np.arange(n)
    blocks = np.minimum(i // self.block_size, self.num_blocks - 1)
    return self._table[blocks, blocks] | np.isin(i, self.global_tokens)


def layout_masks(layout: np.ndarray, *, size: int, block_size: int,
                 global_tokens: tuple[int, ...], window_tokens: int | None,
                 heads: int) -> masks.MultiHeadMask:
  """One LayoutMask per head from a [1 | heads, num_blocks, per_row] layout."""
  head_masks = []
  for rows in layout:
    table = np.zeros((rows.shape[0], rows.shape[0]), bool)
    for i, row in enumerate(rows):
      table[i, row[row >= 0]] = True
    head_masks.append(LayoutMask(size, table.tobytes(), rows.shape[0], block_size,
                                 tuple(int(t) for t in global_tokens), window_tokens))
  return masks.MultiHeadMask(tuple(head_masks * heads if len(head_masks) == 1 else head_masks))


@functools.lru_cache(maxsize=64)
def _mask_infos(mask: masks.MultiHeadMask, block: int):
  """Splash's block tables of `mask` (forward, dq, dkv) as numpy, and its mask function:
  `make_splash_mha`'s processing, cached here as host arrays. (A kernel object caches them as
  jax arrays, which, made while a step is traced under a mesh, are tracers of that trace.)"""
  common = dict(downcast_smem_data=True, head_shards=1, q_seq_shards=1)
  fwd, function = mask_info.process_mask(mask, (block, block), **common)
  dkv, _ = mask_info.process_mask_dkv(mask, (block, block), shrink_grid=True, **common)
  return fwd, fwd, dkv, function  # the dq kernel's tiles are the forward's


def _block_sizes(block: int) -> splash.BlockSizes:
  return splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                           block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                           block_q_dq=block, block_kv_dq=block)


def _kernel(mask: masks.MultiHeadMask, block: int, interpret: bool):
  """`make_splash_mha(mask, ...)` with single-device shards, from the cached block tables."""
  fwd, dq, dkv, function = _mask_infos(mask, block)
  as_jax = functools.partial(jax.tree.map, jnp.asarray)
  return splash.SplashAttentionKernel(
      as_jax(fwd), as_jax(dq), as_jax(dkv), block_sizes=_block_sizes(block), is_mqa=False,
      save_residuals=False, mask_value=splash.DEFAULT_MASK_VALUE, attn_logits_soft_cap=None,
      residual_checkpoint_name=None, mask_function=function, interpret=interpret)


def kernel_block(block: int | None, layout_block: int) -> int:
  """Splash's tile: `block`, else the layout's block rounded up to the 128-token granule."""
  return block or -(-layout_block // GRANULE) * GRANULE


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: masks.MultiHeadMask, *,
              block: int, real: jax.Array | None, segment_ids: jax.Array | None,
              interpret: bool = False) -> jax.Array:
  """Splash attention of pre-scaled q over the static `mask` (`mask.shape[-1]` a multiple of
  `block`, >= length).

  Args:
    q, k, v: [batch, length, heads, head_dim].
    real: [batch, length] True for real tokens (None: all); segment_ids: [batch, length].

  Returns:
    [batch, length, heads, head_dim] in q's dtype.
  """
  b, n, h, d = q.shape
  size = mask.shape[-1]
  ids = jnp.zeros((b, n), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
  if real is not None:
    ids = jnp.where(real, ids, -1)
  ids = jnp.pad(ids, ((0, 0), (0, size - n)), constant_values=-2)

  def heads_first(x):  # [b, n, h, d] -> [b, h, size, d]
    return jnp.pad(x, ((0, 0), (0, size - n), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  kernel = _kernel(mask, block, interpret)
  out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, splash.SegmentIds(ids, ids)))(
      heads_first(q), heads_first(k), heads_first(v), ids)
  out = out.transpose(0, 2, 1, 3)[:, :n]
  return _zero_empty_rows(out, mask, ids, n).astype(q.dtype)


def _zero_empty_rows(out: jax.Array, mask: masks.MultiHeadMask, ids: jax.Array,
                     n: int) -> jax.Array:
  """Zeroes rows with no allowed key (splash's output there is a mean of values)."""
  own = np.stack([head.diagonal(n) for head in mask.masks])  # [heads, n]
  rows = np.flatnonzero(~own.all(axis=0))
  if rows.size == 0:
    return out
  static = np.stack([head[rows, :] for head in mask.masks])  # [heads, R, size]
  same = ids[:, rows, None] == ids[:, None, :]  # [b, R, size]
  some = jnp.any(static[None] & same[:, None], axis=-1)  # [b, heads, R]
  return out.at[:, rows].multiply(some.transpose(0, 2, 1)[..., None].astype(out.dtype))



def full_mask(size: int, heads: int) -> masks.MultiHeadMask:
  """Dense attention's mask (one block that every query sees), for `attention`."""
  full = LayoutMask(size, np.ones((1, 1), bool).tobytes(), 1, size)
  return masks.MultiHeadMask((full,) * heads)
