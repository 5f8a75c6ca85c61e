"""The block-sparse attention variants: each builds a static layout (`layouts.py`) and runs it
on the one block-sparse engine (`sparse_engine.py`): exact softmax over the listed key blocks,
never an n x n score matrix.

Sliding windows (`local`, `longformer`, `bigbird`) come in two granularities:
- block-granular, `window` (default): a query in block i sees blocks i - window .. i + window
  whole, as in LRA's local attention (Tay et al. 2021) and BigBird's blocked ITC window (Zaheer
  et al. 2020). Which keys a token sees depends on where it falls in its block, so with packed
  sequences the output depends on a sequence's offset in the row.
- token-level, `window_tokens` w: a query at i sees keys with |i - j| <= w, as Longformer's
  sliding window (Beltagy et al. 2020; w = half its window size). The layout holds the
  ceil(w / block_size) blocks each side and the engine masks by distance, so the cost stays
  O(n * (w + block_size)). With segment ids the distance is the in-segment one, so packed rows
  compute exactly what the unpacked sequences do.

- `local`: sliding window only.
- `block`: block-diagonal, each block attends to itself (Qiu et al. 2020, BlockBERT).
- `strided`: Child et al. 2019, "Generating Long Sequences with Sparse Transformers", made
  bidirectional at block granularity, both factorised heads merged into every head.
- `bigbird`: window + global blocks + random blocks (Zaheer et al. 2020, "Big Bird", ITC).
- `longformer`: window + global tokens (Beltagy et al. 2020, "Longformer").

Global tokens and BigBird's random blocks are row positions, not segment positions. A packed
row has one CLS at row index 0, so global tokens with packed rows (segment ids) are refused in
one line; random blocks are a pattern, not a role, and stay (the window part is exact under
packing with `window_tokens`).

LongT5's transient-global attention (Guo et al. 2022) is not here: its global keys are block
summaries of the layer input (with their own layer norm), not tokens, and with packed sequences a
summary block may straddle two segments; it needs keys the engine does not take.
"""

from __future__ import annotations

import numpy as np

from encoders.attention import implementation, layouts, sparse_engine
from encoders.attention.kernels import dispatch
from encoders.errors import ConfigError
from encoders.registry import register


class BlockSparseAttention(implementation.KernelAttention):
  """A fixed block pattern run by `sparse_engine.attention` or a kernel (`implementation`, see
  encoders/attention/implementation.py); subclasses define `layout`."""
  block_size: int = 64  # tokens per block; sequences are padded internally to a multiple
  SUPPORTED = ("xla", "splash", "pallas_gpu")
  PREFERRED = {"tpu": ("splash",), "gpu": ("pallas_gpu",)}

  def kernel_tile(self):
    return self.block_size

  def layout(self, length: int, heads: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(layout [num_blocks, per_row] or [heads, num_blocks, per_row], global token indices)."""
    raise TypeError(f"{type(self).__name__} is abstract: a block-sparse variant defines layout()")

  def num_blocks(self, length: int) -> int:
    self.check_int("block_size", 1)
    return sparse_engine.num_blocks(length, self.block_size)

  def check(self, field: str, valid: bool, requirement: str) -> None:
    if not valid:
      raise ConfigError(f"model.attention.{field}={getattr(self, field)!r} must be {requirement}")

  def check_int(self, field: str, minimum: int) -> None:
    value = getattr(self, field)
    self.check(field, isinstance(value, int) and value >= minimum, f"an integer >= {minimum}")

  def token_window(self) -> int | None:
    """The token-level window passed to the engine; None = layout blocks count whole."""
    return None

  def attend(self, q, k, v, *, mask, segment_ids, deterministic, bias=None):
    layout, global_tokens = self.layout(q.shape[1], q.shape[2])
    if segment_ids is not None and global_tokens:
      field = "global_blocks" if hasattr(self, "global_blocks") else "global_tokens"
      raise ConfigError(
          f"model.attention.{field}={getattr(self, field)!r} with packed rows (segment ids): "
          "global tokens are row positions, so only a row's first sequence would get them; "
          f"set model.attention.{field}=() or data.packing.enabled=False")
    chosen = self.chosen_implementation(q, bias=bias, segment_ids=segment_ids)
    if chosen != "xla":
      return dispatch.block_sparse(
          q, k, v, layout, implementation=chosen, block_size=self.block_size,
          global_tokens=global_tokens, mask=mask, segment_ids=segment_ids,
          window_tokens=self.token_window(), interpret=self.interpret,
          kernel_block_size=self.kernel_block_size)
    rate = self.config.attention_dropout_rate
    rng = None if deterministic or rate == 0.0 else self.make_rng("dropout")
    return sparse_engine.attention(q, k, v, layout, block_size=self.block_size,
                                 global_tokens=global_tokens, mask=mask,
                                 segment_ids=segment_ids, bias=bias,
                                 window_tokens=self.token_window(), dropout_rate=rate,
                                 dropout_rng=rng)


class WindowedAttention(BlockSparseAttention):
  """A block-sparse variant with a sliding window, block-granular or token-level (see the
  module docstring)."""
  window: int = 1  # blocks each side (block-granular window)
  window_tokens: int | None = None  # tokens each side (token-level window); replaces `window`

  def token_window(self):
    return self.window_tokens

  def window_blocks(self) -> int:
    """Blocks each side that the window's layout lists."""
    if self.window_tokens is None:
      self.check_int("window", 0)
      return self.window
    self.check("window_tokens", isinstance(self.window_tokens, int) and self.window_tokens >= 0,
               "None or an integer >= 0")
    self.check_int("block_size", 1)
    return layouts.window_reach(self.window_tokens, self.block_size)


@register("attention", "local")
class LocalAttention(WindowedAttention):
  """Sliding window: `window` blocks each side (LRA's local attention, Tay et al. 2021) or
  `window_tokens` tokens each side (Longformer's window without global tokens)."""

  def layout(self, length, heads):
    return layouts.local_layout(self.num_blocks(length), self.window_blocks()), ()


@register("attention", "block")
class BlockAttention(BlockSparseAttention):
  """Block-diagonal attention (Qiu et al. 2020, "Blockwise Self-Attention for Long Document
  Understanding"); with block_size >= length it is dense attention."""

  def layout(self, length, heads):
    return layouts.block_layout(self.num_blocks(length)), ()


@register("attention", "strided")
class StridedAttention(BlockSparseAttention):
  """Child et al. 2019's fixed or strided factorised pattern, bidirectional, over blocks (see
  `strided_layout` for the exact pattern)."""
  stride: int = 4  # blocks per group ("fixed") or between strided blocks ("strided")
  summary: int = 1  # "fixed": summary blocks at the end of each group
  pattern: str = "fixed"  # "fixed" or "strided"

  def layout(self, length, heads):
    self.check_int("stride", 1)
    self.check_int("summary", 1)
    self.check("summary", self.summary <= self.stride, f"<= stride={self.stride}")
    self.check("pattern", self.pattern in layouts.STRIDED_PATTERNS,
               f"one of {layouts.STRIDED_PATTERNS}")
    layout = layouts.strided_layout(self.num_blocks(length), self.stride, self.summary,
                                    self.pattern)
    return layout, ()


@register("attention", "bigbird")
class BigBirdAttention(WindowedAttention):
  """Big Bird (Zaheer et al. 2020), ITC form: a window (block-granular by default, as the
  paper's blocked implementation: `window` 1 = its 3 sliding blocks), global blocks (existing
  tokens made global: by default the first and last block, as in the reference implementation)
  and random blocks, drawn per head outside the window's blocks. Every layer uses the same
  pattern (the seed does not depend on the layer: under `nn.scan` all layers are one module);
  it depends only on the options, the head and the number of blocks, so it is reproducible
  across runs and restarts."""
  global_blocks: tuple[int, ...] = (0, -1)  # block indices, negative from the end
  num_random_blocks: int = 3
  seed: int = 0  # random blocks come from np.random.default_rng((seed, head))

  def layout(self, length, heads):
    window = self.window_blocks()
    self.check_int("num_random_blocks", 0)
    self.check_int("seed", 0)
    nb = self.num_blocks(length)
    self.check("global_blocks", all(-nb <= g < nb for g in self.global_blocks),
               f"block indices in [-{nb}, {nb}) for length {length}")
    global_blocks = tuple(sorted({g % nb for g in self.global_blocks}))
    layout = layouts.bigbird_layout(nb, heads, window, global_blocks, self.num_random_blocks,
                                    self.seed)
    tokens = tuple(t for g in global_blocks
                   for t in range(g * self.block_size, min((g + 1) * self.block_size, length)))
    return layout, tokens


@register("attention", "longformer")
class LongformerAttention(WindowedAttention):
  """Longformer (Beltagy et al. 2020): a sliding window plus global tokens that attend to and
  are attended by every token. The paper's window is token-level (`window_tokens` = half its
  window size); the default is block-granular `window` (the setting of the measured baselines).
  Global tokens are row indices, so packed rows need `global_tokens=()` (see the module
  docstring); the window part is exact under packing only with `window_tokens`."""
  global_tokens: tuple[int, ...] = (0,)  # token indices (CLS); those beyond the length dropped

  def layout(self, length, heads):
    window = self.window_blocks()
    self.check("global_tokens", all(isinstance(t, int) and t >= 0 for t in self.global_tokens),
               "token indices >= 0")
    tokens = tuple(t for t in self.global_tokens if t < length)
    return layouts.local_layout(self.num_blocks(length), window), tokens
