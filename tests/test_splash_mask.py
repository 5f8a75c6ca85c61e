"""Splash's block tables built from our layouts (encoders/attention/kernels/splash_mask.py)
against splash's own `process_mask` run on the same token mask: equal arrays for masks shared by
the heads; for per-head masks (which `process_mask` leaves unshrunk) the same token mask read
back from the tables; and BigBird's tables at 64K within a TPU's scalar memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_mask_info as mask_info,
)

from encoders.attention import layouts
from encoders.attention.kernels.splash_mask import LayoutMask, mask_infos


@dataclasses.dataclass(frozen=True)
class TokenMask(masks.Mask):
  """One head of a LayoutMask as the lazily evaluated mask splash's `process_mask` reads."""
  layout: LayoutMask
  head: int

  @property
  def shape(self):
    return (self.layout.size, self.layout.size)

  def __getitem__(self, idx):
    rows, cols = (np.atleast_1d(np.arange(self.layout.size)[i]) for i in idx)
    return self.layout.values(self.head, rows, cols)


def upstream(mask: LayoutMask, heads: int, tile: int):
  multi = masks.MultiHeadMask(tuple(TokenMask(mask, h if mask.heads > 1 else 0)
                                    for h in range(heads)))
  common = dict(downcast_smem_data=True, head_shards=1, q_seq_shards=1)
  fwd, _ = mask_info.process_mask(multi, (tile, tile), **common)
  dkv, _ = mask_info.process_mask_dkv(multi, (tile, tile), shrink_grid=True, **common)
  return fwd, dkv


def read_back(info, tile: int, size: int, heads: int, dkv: bool) -> np.ndarray:
  """The bool [heads, size, size] token mask that a MaskInfo runs (shrunk or not)."""
  out = np.zeros((heads, size, size), bool)
  for h, i, j in zip(*np.nonzero(info.block_mask)):
    hh = range(heads) if info.block_mask.shape[0] == 1 else [h]
    q, kv = (int(info.data_next[h, i, j]), j) if dkv else (i, int(info.data_next[h, i, j]))
    if info.block_mask[h, i, j] == 2:
      content = np.ones((tile, tile), bool)
    else:
      content = info.partial_mask_blocks[info.mask_next[h, i, j]]
      content = content.T if dkv else content
    for head in hh:
      out[head, q * tile:(q + 1) * tile, kv * tile:(kv + 1) * tile] = content
  return out


SHARED = {  # name -> (layout, size, block_size, tile, hidden keys, window_tokens)
    "local": (layouts.local_layout(8, 1), 512, 64, 128, (), None),
    "local_global": (layouts.local_layout(8, 1), 512, 64, 128, (0,), None),
    "longformer": (layouts.local_layout(16, 2), 256, 16, 128, (0, 5, 200), 20),
    "odd_blocks": (layouts.local_layout(7, 1), 512, 70, 128, (3,), 50),
    "strided": (layouts.strided_layout(16, 4, 1, "fixed"), 1024, 64, 128, (), None),
    "block": (layouts.block_layout(10), 640, 64, 128, (), None),
    "window_large_tile": (layouts.local_layout(32, 1), 1024, 32, 256, (), 40),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_tables_equal_process_mask(name):
  layout, size, block_size, tile, hidden, window = SHARED[name]
  mask = LayoutMask.from_layout(layout[None], size=size, block_size=block_size,
                                hidden_keys=hidden, window_tokens=window)
  for ours, theirs in zip(mask_infos(mask, tile), upstream(mask, 2, tile)):
    for field in ("data_next", "mask_next", "block_mask", "partial_mask_blocks"):
      a, b = getattr(ours, field), getattr(theirs, field)
      assert (a is None) == (b is None), field
      if a is not None:
        assert a.dtype == b.dtype and a.shape == b.shape, (field, a.shape, b.shape)
        np.testing.assert_array_equal(a, b, err_msg=field)


def test_dense_tables_are_all_full_tiles():
  fwd, dkv = mask_infos(LayoutMask.full(1024), 256)
  for info in (fwd, dkv):
    assert np.all(info.block_mask == 2) and info.partial_mask_blocks is None


def test_per_head_tables_run_each_heads_mask():
  """BigBird's per-head random blocks with hidden global blocks: our shrunk per-head tables and
  splash's full grid run the same token mask, which is the layout's."""
  heads, nb, bs, tile = 3, 64, 32, 128
  layout = layouts.bigbird_layout(nb, heads, 1, (0, nb - 1), 2, 0)
  hidden = tuple(range(bs)) + tuple(range((nb - 1) * bs, nb * bs))
  mask = LayoutMask.from_layout(layout, size=nb * bs, block_size=bs, hidden_keys=hidden)
  tokens = np.arange(mask.size)
  want = np.stack([mask.values(h, tokens, tokens) for h in range(heads)])
  ours, theirs = mask_infos(mask, tile), upstream(mask, heads, tile)
  assert ours[0].block_mask.shape[2] < theirs[0].block_mask.shape[2]  # shrunk
  for dkv in (False, True):
    np.testing.assert_array_equal(read_back(ours[dkv], tile, mask.size, heads, dkv), want)
    np.testing.assert_array_equal(read_back(theirs[dkv], tile, mask.size, heads, dkv), want)


def test_bigbird_tables_at_64k_fit_scalar_memory():
  """Splash keeps data_next, mask_next and block_mask in scalar memory (1 MiB on a TPU)."""
  n, bs, heads = 64 * 1024, 64, 12
  nb = n // bs
  layout = layouts.bigbird_layout(nb, heads, 1, (0, nb - 1), 3, 0)
  hidden = tuple(range(bs)) + tuple(range(n - bs, n))
  fwd, dkv = mask_infos(LayoutMask.from_layout(layout, size=n, block_size=bs,
                                               hidden_keys=hidden), 128)
  scalar = sum(a.nbytes for info in (fwd, dkv)
               for a in (info.data_next, info.mask_next, info.block_mask))
  assert scalar < 2**20, scalar
