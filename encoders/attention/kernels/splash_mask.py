"""Splash attention's block tables (`MaskInfo`), built straight from one of our block layouts.

Splash's own `process_mask` asks the mask for every tile of the [length, length] grid, two
passes each for the forward and the dK/dV tables, and hashes every partial tile: at 64K tokens
that is 4 x 262,144 tile reads per distinct head pattern (minutes on a host CPU). Here the
tables come from the layout with array operations: the tiles a layout can touch from a product of
block-incidence matrices, their contents deduplicated by the block pattern they cover, and only
tiles near a token window's edge or holding a global column computed token by token.

The arrays are exactly `process_mask`'s for a mask shared by all heads (`test_splash_mask`
compares them). For per-head masks (BigBird's random blocks) `process_mask` keeps the full
[heads, q_blocks, kv_blocks] grid; here each head's rows are shrunk as a shared mask's are, to the
widest row of any head, which the kernel reads the same way (it indexes [head, q, slot]): at 64K
the full grid's tables alone outgrow a TPU's 1 MiB of scalar memory.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_mask_info import MaskInfo

from encoders.attention.layouts import window_reach


@dataclasses.dataclass(frozen=True)
class LayoutMask:
  """The token mask splash runs for a block layout: query i sees key j when j's layout block is
  listed in i's block row (blocks past the last one count as the last), j lies within
  `window_tokens` of i where the window reaches (listed blocks beyond its reach, as BigBird's
  random blocks, count whole), and j is not one of `hidden_keys` (global keys, merged apart).

  `tables`: the bytes of a bool [heads, num_blocks, num_blocks] array, heads 1 when shared.
  """
  tables: bytes
  heads: int
  num_blocks: int
  block_size: int
  size: int  # padded length, rows and columns: a multiple of the kernel's tile
  hidden_keys: tuple[int, ...] = ()
  window_tokens: int | None = None

  @classmethod
  def from_layout(cls, layout: np.ndarray, *, size: int, block_size: int,
                  hidden_keys=(), window_tokens: int | None = None) -> LayoutMask:
    """From a [1 | heads, num_blocks, per_row] layout (key block ids, -1 unused)."""
    heads, nb, _ = layout.shape
    table = np.zeros((heads, nb, nb), bool)
    h, row, slot = np.nonzero(layout >= 0)
    table[h, row, layout[h, row, slot]] = True
    return cls(table.tobytes(), heads, nb, block_size, size,
               tuple(int(t) for t in np.unique(np.asarray(hidden_keys, np.int64))),
               window_tokens)

  @classmethod
  def full(cls, size: int) -> LayoutMask:
    """Dense attention: one block, every key."""
    return cls(np.ones((1, 1, 1), bool).tobytes(), 1, 1, size, size)

  @functools.cached_property
  def table(self) -> np.ndarray:
    return np.frombuffer(self.tables, bool).reshape(self.heads, self.num_blocks,
                                                    self.num_blocks)

  @functools.cached_property
  def hidden(self) -> np.ndarray:
    """Bool [size]: the hidden keys."""
    out = np.zeros(self.size, bool)
    out[list(self.hidden_keys)] = True
    return out

  def block_of(self, tokens: np.ndarray) -> np.ndarray:
    return np.minimum(tokens // self.block_size, self.num_blocks - 1)

  def values(self, head: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bool [..., R, C] of the mask at rows [..., R] x cols [..., C] for one head."""
    r, c = rows[..., :, None], cols[..., None, :]
    rb, cb = self.block_of(r), self.block_of(c)
    out = self.table[head][rb, cb]
    if self.window_tokens is not None:
      reach = window_reach(self.window_tokens, self.block_size)
      out = out & ((np.abs(r - c) <= self.window_tokens) | (np.abs(rb - cb) > reach))
    if self.hidden_keys:
      out = out & ~self.hidden[c]
    return out


def _tile_kinds(mask: LayoutMask, tile: int):
  """Per head: kind [heads, qb, kb] (0 empty, 1 partial, 2 full), partial-tile id [heads, qb, kb]
  (-1 where not partial, ids in order of first appearance) and the partial tiles [P, tile, tile]."""
  tiles = mask.size // tile
  token = np.arange(mask.size)
  block = mask.block_of(token).reshape(tiles, tile)
  first, offset = block[:, 0], block - block[:, :1]  # each tile's first block and map to it
  maps, map_id = np.unique(offset, axis=0, return_inverse=True)
  map_id = map_id.reshape(-1)
  touches = np.zeros((tiles, mask.num_blocks), np.float32)
  touches[np.arange(tiles)[:, None], block] = 1.0
  hidden_tile = np.zeros(tiles, bool)
  hidden_tile[np.asarray(mask.hidden_keys, np.int64) // tile] = True
  if mask.window_tokens is not None:  # tile pairs where a block pair lies within the reach
    reach = window_reach(mask.window_tokens, mask.block_size)
    last = block[:, -1]
    gap = np.maximum(0, np.maximum(first[None, :] - last[:, None], first[:, None] - last[None, :]))
    near = gap <= reach
  kinds = np.zeros((mask.heads, tiles, tiles), np.int8)
  content_of = np.full((mask.heads, tiles, tiles), -1, np.int64)
  contents: list[np.ndarray] = []  # packed bits of partial tiles, possibly repeated
  for h in range(mask.heads):
    qi, kj = np.nonzero(touches @ mask.table[h].astype(np.float32) @ touches.T)
    exact = hidden_tile[kj]
    if mask.window_tokens is not None:
      exact = exact | near[qi, kj]
    sq, sk = qi[~exact], kj[~exact]
    if len(sq):
      _blockwise_tiles(mask, h, sq, sk, first, maps, map_id, kinds, content_of, contents)
    # The rest, token by token, a few hundred tiles at a time.
    eq, ek = qi[exact], kj[exact]
    for start in range(0, len(eq), 256):
      bq, bk = eq[start:start + 256], ek[start:start + 256]
      values = mask.values(h, bq[:, None] * tile + np.arange(tile),
                           bk[:, None] * tile + np.arange(tile))
      _classify(kinds[h], content_of[h], contents, bq, bk, values, np.arange(len(bq)))
  return kinds, *_number_partials(content_of, contents, tile)


def _blockwise_tiles(mask, h, qi, kj, first, maps, map_id, kinds, content_of, contents):
  """Tiles (qi, kj) away from windows and hidden keys: their contents follow from the blocks they
  cover, so one tile per distinct (row map, column map, covered blocks) is computed."""
  steps = np.arange(int(maps.max()) + 1)
  last = mask.num_blocks - 1
  covered = mask.table[h][np.minimum(first[qi][:, None, None] + steps[:, None], last),
                          np.minimum(first[kj][:, None, None] + steps[None, :], last)]
  keys = np.concatenate([map_id[qi][:, None], map_id[kj][:, None],
                         np.packbits(covered.reshape(len(qi), -1), axis=1).astype(np.int64)],
                        axis=1)
  _, rep, key_id = np.unique(keys, axis=0, return_index=True, return_inverse=True)
  tiles = mask.table[h][first[qi[rep]][:, None, None] + maps[map_id[qi[rep]]][:, :, None],
                        first[kj[rep]][:, None, None] + maps[map_id[kj[rep]]][:, None, :]]
  _classify(kinds[h], content_of[h], contents, qi, kj, tiles, key_id.reshape(-1))


def _classify(kinds, content_of, contents, qi, kj, tiles, tile_of):
  """Kinds of tiles (qi[e], kj[e]) whose contents are tiles[tile_of[e]]; partial contents are
  appended to `contents` and `content_of` points at them."""
  full = tiles.all(axis=(1, 2))
  some = tiles.any(axis=(1, 2))
  kinds[qi, kj] = np.where(full, 2, np.where(some, 1, 0))[tile_of]
  partial = (some & ~full)[tile_of]
  content_of[qi[partial], kj[partial]] = len(contents) + tile_of[partial]
  contents.extend(np.packbits(tiles.reshape(len(tiles), -1), axis=1))


def _number_partials(content_of, contents, tile):
  """Distinct partial tiles numbered by first appearance in (head, q, kv) order."""
  ids = np.full(content_of.shape, -1, np.int64)
  where = np.flatnonzero(content_of.reshape(-1) >= 0)
  if where.size == 0:
    return ids.astype(np.int32), None
  distinct: dict[bytes, int] = {}
  canonical = np.array([distinct.setdefault(c.tobytes(), len(distinct)) for c in contents])
  found = canonical[content_of.reshape(-1)[where]]
  used, first = np.unique(found, return_index=True)
  order = used[np.argsort(first, kind="stable")]
  rank = np.zeros(len(distinct), np.int64)
  rank[order] = np.arange(len(order))
  ids.reshape(-1)[where] = rank[found]
  packed = np.stack([np.frombuffer(c, np.uint8) for c in distinct])[order]
  blocks = np.unpackbits(packed, axis=1, count=tile * tile).astype(bool)
  return ids.astype(np.int32), blocks.reshape(-1, tile, tile)


def _following(flags: np.ndarray, values: np.ndarray) -> np.ndarray:
  """For each position of the flattened arrays, `values` at the first flagged position at or
  after it, wrapping to the first flagged one (0 where none is flagged)."""
  flat = np.flatnonzero(flags.reshape(-1))
  if flat.size == 0:
    return np.zeros(flags.shape, np.int32)
  at = np.searchsorted(flat, np.arange(flags.size))
  return values.reshape(-1)[flat[np.where(at == flat.size, 0, at)]].reshape(flags.shape)


def _shrink(arrays, nonzero: np.ndarray, axis: int):
  """Each row (axis 2: the kv slots of a query row) or column (axis 1) cut to its nonzero
  entries, in order, padded with zeros to the widest: after them for rows, before them for
  columns (as splash's `process_mask` does)."""
  count = nonzero.sum(axis=axis, keepdims=True)
  width = max(int(count.max()), 1)
  if axis == 2:
    order = np.argsort(~nonzero, axis=2, kind="stable")[:, :, :width]
    valid = np.arange(width)[None, None, :] < count
  else:
    order = np.argsort(nonzero, axis=1, kind="stable")[:, -width:, :]
    valid = np.arange(width)[None, :, None] >= width - count
  return [np.where(valid, np.take_along_axis(a, order, axis=axis), 0) for a in arrays]


def _downcast(array: np.ndarray) -> np.ndarray:
  top = int(array.max(initial=0))
  for dtype in (np.int8, np.int16):
    if top <= np.iinfo(dtype).max:
      return array.astype(dtype)
  return array.astype(np.int32)


@functools.lru_cache(maxsize=64)
def mask_infos(mask: LayoutMask, tile: int) -> tuple[MaskInfo, MaskInfo]:
  """Splash's forward (also the dQ kernel's) and dK/dV `MaskInfo` of `mask` for square tiles of
  `tile` tokens, one head shard and one query shard, grids shrunk, integers downcast."""
  kinds, ids, partial_blocks = _tile_kinds(mask, tile)
  heads, tiles, _ = kinds.shape
  index = np.broadcast_to(np.arange(tiles, dtype=np.int32), kinds.shape)
  nonzero, partial = kinds > 0, kinds == 1
  infos = []
  for dkv in (False, True):
    # The kernels' prefetch order: (head, q, kv) forward, (kv, head, q) for dK/dV.
    order = (lambda a: a.transpose(2, 0, 1)) if dkv else (lambda a: a)
    back = (lambda a: a.transpose(1, 2, 0)) if dkv else (lambda a: a)
    data_next = back(_following(order(nonzero), order(index.swapaxes(1, 2) if dkv else index)))
    mask_next = back(_following(order(partial), order(ids)))
    block_mask, data_next, mask_next = _shrink(
        [kinds.astype(np.int32), data_next, mask_next], nonzero, axis=1 if dkv else 2)
    blocks = partial_blocks
    if blocks is not None and dkv:
      blocks = np.swapaxes(blocks, -1, -2)
    infos.append(MaskInfo(
        data_next=_downcast(data_next),
        mask_next=None if blocks is None else _downcast(mask_next),
        block_mask=_downcast(block_mask), partial_mask_blocks=blocks, q_sequence=None))
  return infos[0], infos[1]
