"""Static block layouts: for each query block, the key blocks it attends to (see
`sparse_engine.py`; the registered variants that run them are in `sparse_variants.py`).
Builders are pure numpy functions of the block count, cached, so a pattern is computed once per
sequence length at trace time.

- `local_layout`: sliding window of blocks; `block_layout`: block-diagonal (BlockBERT);
- `strided_layout`: Sparse Transformer's fixed/strided patterns (Child et al. 2019);
- `bigbird_layout`: window + global blocks + per-head random blocks (Zaheer et al. 2020).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

STRIDED_PATTERNS = ("fixed", "strided")


def _pack(rows: list[Iterable[int]]) -> np.ndarray:
  """Sorted rows of block ids padded with -1 into an int32 array (read-only, it is cached)."""
  rows = [sorted(set(row)) for row in rows]
  out = np.full((len(rows), max(map(len, rows))), -1, np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  out.flags.writeable = False
  return out


def window_reach(window_tokens: int, block_size: int) -> int:
  """Blocks each side of a query's block that hold keys within `window_tokens` tokens of it:
  what a token-level window's layout lists, and where the engine and the kernels mask by
  distance (listed blocks farther away, as BigBird's random ones, count whole)."""
  return -(-window_tokens // block_size)


def _window(i: int, window: int, num_blocks: int) -> range:
  return range(max(0, i - window), min(num_blocks, i + window + 1))


@functools.lru_cache(maxsize=256)
def local_layout(num_blocks: int, window: int) -> np.ndarray:
  """[num_blocks, <= 2 * window + 1]: block i sees blocks i - window .. i + window."""
  return _pack([_window(i, window, num_blocks) for i in range(num_blocks)])


@functools.lru_cache(maxsize=256)
def block_layout(num_blocks: int) -> np.ndarray:
  """[num_blocks, 1]: block i sees only itself."""
  return _pack([[i] for i in range(num_blocks)])


@functools.lru_cache(maxsize=256)
def strided_layout(num_blocks: int, stride: int, summary: int, pattern: str) -> np.ndarray:
  """Child et al.'s two factorised patterns over blocks, bidirectional, as one union.

  `fixed`: block i sees every block of its group of `stride` blocks (j // stride == i // stride)
  and the last `summary` blocks of every group (j % stride >= stride - summary), which carry
  information between groups. `strided`: block i sees blocks with |i - j| < stride and every
  block a multiple of `stride` away ((i - j) % stride == 0). Either way any block reaches any
  other in two hops, with O(stride + num_blocks / stride) blocks per row.
  """
  rows = []
  for i in range(num_blocks):
    if pattern == "fixed":
      row = [j for j in range(num_blocks)
             if j // stride == i // stride or j % stride >= stride - summary]
    else:
      row = [j for j in range(num_blocks) if abs(i - j) < stride or (i - j) % stride == 0]
    rows.append(row)
  return _pack(rows)


@functools.lru_cache(maxsize=256)
def bigbird_layout(num_blocks: int, heads: int, window: int, global_blocks: tuple[int, ...],
                   num_random: int, seed: int) -> np.ndarray:
  """[heads, num_blocks, per_row]: window blocks plus `num_random` random blocks per row.

  Global blocks are left out (the engine adds them to every row as global tokens). Random
  blocks are drawn without replacement among the blocks outside the row's window and the global
  blocks, with a generator seeded by (seed, head): each head has its own pattern, every layer
  and every call the same one for a given length.
  """
  layouts = []
  for head in range(heads):
    rng = np.random.default_rng((seed, head))
    rows = []
    for i in range(num_blocks):
      near = set(_window(i, window, num_blocks)) - set(global_blocks)
      far = sorted(set(range(num_blocks)) - near - set(global_blocks))
      picked = rng.choice(far, size=min(num_random, len(far)), replace=False) if far else []
      rows.append(near | {int(j) for j in picked} or {i})
    layouts.append(_pack(rows))
  width = max(layout.shape[1] for layout in layouts)
  out = np.stack([np.pad(layout, ((0, 0), (0, width - layout.shape[1])), constant_values=-1)
                  for layout in layouts])
  out.flags.writeable = False
  return out
