"""Sequence packing: variable-length examples -> fixed-length rows with segment ids.

Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination: Accelerating Large
Language Models without Impacting Performance": padding every example to the row length wastes
up to half the compute; putting several examples in one row and keeping them apart with
`segment_ids` (attention only within a segment) and per-segment `positions` (restarting at 0)
computes exactly the same per-example outputs with far less padding. Exactly, for every
attention that keeps segments apart, except what is tied to row positions rather than segment
positions: block-granular sliding windows (which keys share a block depends on the offset; the
token-level `window_tokens` is exact), and Longformer's global tokens and BigBird's global and
random blocks (encoders/attention/sparse_variants.py).

A packed row holds `segment_ids` 1..n for its n examples (0 = padding) and `positions` 0..len-1
within each example. Examples are placed whole, in order of decreasing length:

- `first_fit`: each example goes into the first (oldest) row with room (first-fit decreasing);
  a max-segment tree over the rows' free space finds that row in O(log rows).
- `best_fit`: each example goes into the row with the least room that still fits it (best-fit
  decreasing); free capacities live in buckets found by bisection over the sorted distinct
  capacities, so packing 100k examples takes about a second.

No example is split or dropped; one longer than the row is truncated to the row length and
counted in `num_truncated`. Rows also hold at most `max_segments` examples (kernelized
attention keeps only that many apart; per-segment heads have that many outputs). Padding before
and after packing on the real corpora, and packing speed: configs/bench/packing.py.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence

import numpy as np

from encoders.errors import ConfigError

METHODS = ("best_fit", "first_fit")


@dataclasses.dataclass
class Packed:
  """Packed rows and the placement of every example.

  inputs, segment_ids, positions: int32 [rows, row_len]; example_index: int32
  [rows, max_segments], the example in segment s + 1 of each row (-1 = none); row, offset:
  int32 [num_examples], where each example starts.
  """
  inputs: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray
  example_index: np.ndarray
  row: np.ndarray
  offset: np.ndarray
  num_truncated: int
  padding_before: float  # padding fraction with one example per row (each padded to row_len)
  padding_after: float  # padding fraction of the packed rows

  def stats(self) -> dict[str, float]:
    return {"padding_fraction_before_packing": self.padding_before,
            "padding_fraction": self.padding_after,
            "num_rows": float(len(self.inputs)), "num_examples": float(len(self.row)),
            "num_truncated": float(self.num_truncated)}


class _MaxTree:
  """Max segment tree over row capacities: leftmost row with capacity >= need."""

  def __init__(self, size: int):
    self.n = 1
    while self.n < max(size, 1):
      self.n *= 2
    self.tree = [-1] * (2 * self.n)

  def set(self, i: int, value: int) -> None:
    i += self.n
    self.tree[i] = value
    i //= 2
    while i:
      self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])
      i //= 2

  def leftmost(self, need: int) -> int:
    """Index of the first leaf >= need, or -1."""
    if self.tree[1] < need:
      return -1
    i = 1
    while i < self.n:
      i = 2 * i if self.tree[2 * i] >= need else 2 * i + 1
    return i - self.n


def assign_rows(lengths: np.ndarray, row_len: int, method: str = "best_fit",
                max_segments: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(row, offset) per example; lengths must already be <= row_len. max_segments 0 = no cap."""
  if method not in METHODS:
    raise ConfigError(f"data.packing.method={method!r}; allowed: {', '.join(METHODS)}")
  lengths = np.asarray(lengths, np.int64)
  order = np.argsort(-lengths, kind="stable")
  row = np.empty(len(lengths), np.int64)
  offset = np.empty(len(lengths), np.int64)
  used: list[int] = []  # tokens used per row
  count: list[int] = []  # segments per row
  cap = max_segments or np.iinfo(np.int64).max
  if method == "first_fit":
    tree = _MaxTree(len(lengths))
    for i in order.tolist():
      need = int(lengths[i])
      r = tree.leftmost(need)
      if r < 0:
        r = len(used)
        used.append(0)
        count.append(0)
      row[i], offset[i] = r, used[r]
      used[r] += need
      count[r] += 1
      tree.set(r, row_len - used[r] if count[r] < cap else -1)
    return row, offset
  buckets: dict[int, list[int]] = {}  # free capacity -> rows with that much room
  capacities: list[int] = []  # sorted distinct keys of `buckets`
  for i in order.tolist():
    need = int(lengths[i])
    j = bisect.bisect_left(capacities, need)
    if j == len(capacities):
      r = len(used)
      used.append(0)
      count.append(0)
    else:
      free = capacities[j]
      rows = buckets[free]
      r = rows.pop()
      if not rows:
        del buckets[free]
        capacities.pop(j)
    row[i], offset[i] = r, used[r]
    used[r] += need
    count[r] += 1
    free = row_len - used[r]
    if free > 0 and count[r] < cap:
      if free not in buckets:
        buckets[free] = []
        bisect.insort(capacities, free)
      buckets[free].append(r)
  return row, offset


def pack(examples: Sequence[np.ndarray], row_len: int, *, method: str = "best_fit",
         max_segments: int = 0, pad_id: int = 0) -> Packed:
  """Packs 1-D int token arrays into rows of `row_len` (see module docstring)."""
  if row_len <= 0:
    raise ConfigError(f"packing: row length {row_len} must be positive")
  if max_segments < 0:
    raise ConfigError(f"data.packing.max_segments={max_segments}; must be >= 0 (0 = no cap)")
  if not len(examples):
    raise ConfigError("packing: no examples to pack")
  raw = np.array([len(e) for e in examples], np.int64)
  if raw.min() <= 0:
    raise ConfigError("packing: examples must be non-empty")
  lengths = np.minimum(raw, row_len)
  row, offset = assign_rows(lengths, row_len, method, max_segments)
  num_rows = int(row.max()) + 1
  flat = np.concatenate([np.asarray(e[:row_len]) for e in examples]).astype(np.int32)
  # Destination of every kept token: row * row_len + offset + index within the example.
  starts = np.repeat(row * row_len + offset, lengths)
  within = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  dest = starts + within
  inputs = np.full(num_rows * row_len, pad_id, np.int32)
  inputs[dest] = flat
  positions = np.zeros(num_rows * row_len, np.int32)
  positions[dest] = within
  # Segment number within the row: rank of the example's offset among its row's examples.
  by_place = np.lexsort((offset, row))
  first_in_row = np.searchsorted(row[by_place], row[by_place], side="left")
  seg = np.empty(len(row), np.int64)
  seg[by_place] = np.arange(len(row)) - first_in_row + 1
  segment_ids = np.zeros(num_rows * row_len, np.int32)
  segment_ids[dest] = np.repeat(seg, lengths)
  width = max_segments or int(seg.max())
  example_index = np.full((num_rows, width), -1, np.int32)
  example_index[row, seg - 1] = np.arange(len(row))
  total = int(lengths.sum())
  return Packed(
      inputs=inputs.reshape(num_rows, row_len), segment_ids=segment_ids.reshape(num_rows, row_len),
      positions=positions.reshape(num_rows, row_len), example_index=example_index,
      row=row.astype(np.int32), offset=offset.astype(np.int32),
      num_truncated=int((raw > row_len).sum()),
      padding_before=1.0 - total / (len(examples) * row_len),
      padding_after=1.0 - total / (num_rows * row_len))


def check_segments(max_segments: int, supported: bool, limit: int | None, by: str) -> None:
  """One-line errors unless packed rows of at most `max_segments` segments (0 = no cap) may
  reach a model whose attention variant `by` keeps segments apart (`supported`), at most
  `limit` per row (None: any); the model side is encoders.needs.model_needs(...).segments."""
  if not supported:
    raise ConfigError(f"model.attention.name={by!r} cannot keep packed segments apart; set "
                      "data.packing.enabled=False or use an attention that supports segments")
  if limit is not None and (max_segments == 0 or max_segments > limit):
    raise ConfigError(f"data.packing.max_segments={max_segments} exceeds "
                      f"model.attention.max_segments={limit} ({by} keeps only that many "
                      "segments apart); lower it (0 = no cap is not allowed here)")


def unpadded_examples(inputs: np.ndarray, pad_id: int = 0) -> list[np.ndarray]:
  """Rows of a padded [N, length] array without their trailing padding."""
  lengths = (inputs != pad_id).sum(axis=1)
  return [inputs[i, :n] for i, n in enumerate(lengths.tolist())]


def split_documents(docs: Sequence[np.ndarray], piece_len: int) -> list[np.ndarray]:
  """Cuts each document into consecutive pieces of at most `piece_len` tokens."""
  return [d[i:i + piece_len] for d in docs for i in range(0, len(d), piece_len)]

