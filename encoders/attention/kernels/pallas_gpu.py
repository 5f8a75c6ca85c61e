"""Block-sparse flash attention as a Pallas (Triton) GPU kernel: every query block loops only
over the key blocks its layout row lists.

FlashAttention's tiling and online softmax (Dao et al. 2022, "FlashAttention"; Dao 2023,
"FlashAttention-2") over a static block layout, as Block-Sparse FlashAttention in the first
paper (Sec. 3.3): the grid is (query block, batch, head); program (i, b, h) reads row i of the
layout (the head's own row for per-head layouts such as BigBird's random blocks) and visits
exactly its `per_row` key blocks, so the work is O(n * per_row * block_size * head_dim), never
O(n^2). JAX's Pallas `mha` knows only causal masks and segment ids and visits every key block.

Masking is the XLA engine's (encoders/attention/sparse_engine.py): a real query sees real keys of
its segment, a padding query any key (its output is ignored); `key_ok` removes keys statically
(past the length, or global tokens, which the caller adds as a separate group); a token-level
window `window_tokens` masks by distance inside the blocks within its reach. A row with no
allowed key outputs 0 and log-sum-exp `NEG`, never NaN.

Scores, softmax and accumulators are f32 whatever the input dtype (bf16 operands feed the
tensor cores); f32 products follow jax's default matmul precision as XLA's dots do (TF32 unless
"highest": `f32_precision`). Each program loops to its row's own block count, not the padded
width (`with_counts`). The kernel returns the output and
its log-sum-exp; the custom VJP takes cotangents of both (the caller merges the global keys'
group through the log-sum-exp) and runs two backward kernels that recompute the scores from
the saved log-sum-exp: dq over the layout's rows, dk and dv over its transpose (for key block
j, the query blocks that list j; built in numpy at trace time).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from encoders.attention.layouts import window_reach

NEG = -1e30  # running max of a row with no allowed key yet: finite, so no inf - inf


def transpose_layout(layout: np.ndarray, num_key_blocks: int) -> np.ndarray:
  """[heads, num_blocks, per_row] query->key layout -> [heads, num_key_blocks, per_col] lists
  of the query blocks that read each key block, -1 padded."""
  columns = [[[] for _ in range(num_key_blocks)] for _ in range(layout.shape[0])]
  for head, rows in enumerate(layout):
    for i, row in enumerate(rows):
      for j in row[row >= 0]:
        columns[head][j].append(i)
  width = max(1, max(len(c) for head in columns for c in head))
  out = np.full((layout.shape[0], num_key_blocks, width), -1, np.int32)
  for head, cols in enumerate(columns):
    for j, col in enumerate(cols):
      out[head, j, :len(col)] = col
  return out


def with_counts(table: np.ndarray) -> np.ndarray:
  """[heads, blocks, width] block lists (-1 padded at the end) -> [heads, blocks, width + 1]
  with each list's length last: the kernels loop to it, not to the padded width (BigBird's
  transposed lists are 14-15 wide where a key block is read by 6 query blocks on average)."""
  counts = np.sum(table >= 0, axis=-1, keepdims=True).astype(np.int32)
  return np.concatenate([table, counts], axis=-1)


def _allowed(q_block, k_block, *, block_size, window_tokens, q_real, q_seg, k_real, k_seg,
             k_ok):
  """Bool [block, block]: which (query, key) pairs of two blocks count (see module doc)."""
  pair = ((q_seg[:, None] == k_seg[None, :]) & k_real[None, :]) | ~q_real[:, None]
  pair = pair & k_ok[None, :]
  if window_tokens is not None:
    reach = window_reach(window_tokens, block_size)
    offsets = jnp.arange(block_size)
    distance = jnp.abs((q_block * block_size + offsets)[:, None]
                       - (k_block * block_size + offsets)[None, :])
    near = jnp.abs(q_block - k_block) <= reach
    pair = pair & ((distance <= window_tokens) | ~near)
  return pair


def _product(a, b, *, trans_a=False, trans_b=False, precision):
  return plgpu.dot(a, b, trans_a=trans_a, trans_b=trans_b,
                   precision=precision if a.dtype == jnp.float32 else None)


def f32_precision() -> jax.lax.Precision:
  """The products' precision for f32 operands: jax's default matmul precision, as XLA's own dots
  follow it. Unset (or "default", "high", "tensorfloat32"): TF32 on the tensor cores, as XLA on
  H100/H200; "highest" or "float32": IEEE f32 (no tensor cores)."""
  exact = jax.config.jax_default_matmul_precision in ("highest", "float32")
  return jax.lax.Precision.HIGHEST if exact else jax.lax.Precision.DEFAULT


def _forward_kernel(layout_ref, q_ref, k_ref, v_ref, real_ref, seg_ref, key_ok_ref, o_ref,
                    lse_ref, *, block_size, num_slots, window_tokens, precision):
  dot = functools.partial(_product, precision=precision)
  i = pl.program_id(0)
  rows = pl.ds(i * block_size, block_size)
  q = q_ref[...]
  masks = dict(block_size=block_size, window_tokens=window_tokens, q_real=real_ref[rows] != 0,
               q_seg=seg_ref[rows])

  def body(slot, carry):
    out, row_max, total = carry
    j = layout_ref[slot]
    cols = pl.ds(jnp.maximum(j, 0) * block_size, block_size)
    scores = dot(q, k_ref[cols, :], trans_b=True)
    ok = _allowed(i, j, k_real=real_ref[cols] != 0, k_seg=seg_ref[cols],
                  k_ok=(key_ok_ref[cols] != 0) & (j >= 0), **masks)
    scores = jnp.where(ok, scores, -jnp.inf)
    new_max = jnp.maximum(row_max, jnp.max(scores, axis=1))
    p = jnp.exp(scores - new_max[:, None])
    correction = jnp.exp(row_max - new_max)
    total = total * correction + jnp.sum(p, axis=1)
    out = out * correction[:, None] + dot(p.astype(v_ref.dtype), v_ref[cols, :])
    return out, new_max, total

  init = (jnp.zeros(q.shape, jnp.float32), jnp.full((block_size,), NEG, jnp.float32),
          jnp.zeros((block_size,), jnp.float32))
  out, row_max, total = jax.lax.fori_loop(0, layout_ref[num_slots], body, init)
  some = total > 0
  safe = jnp.where(some, total, 1.0)
  o_ref[...] = (out / safe[:, None]).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(some, row_max + jnp.log(safe), NEG)


def _dq_kernel(layout_ref, q_ref, k_ref, v_ref, real_ref, seg_ref, key_ok_ref, do_ref, lse_ref,
               delta_ref, dq_ref, *, block_size, num_slots, window_tokens, precision):
  dot = functools.partial(_product, precision=precision)
  i = pl.program_id(0)
  rows = pl.ds(i * block_size, block_size)
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  masks = dict(block_size=block_size, window_tokens=window_tokens, q_real=real_ref[rows] != 0,
               q_seg=seg_ref[rows])

  def body(slot, dq):
    j = layout_ref[slot]
    cols = pl.ds(jnp.maximum(j, 0) * block_size, block_size)
    k = k_ref[cols, :]
    ok = _allowed(i, j, k_real=real_ref[cols] != 0, k_seg=seg_ref[cols],
                  k_ok=(key_ok_ref[cols] != 0) & (j >= 0), **masks)
    p = jnp.where(ok, jnp.exp(dot(q, k, trans_b=True) - lse[:, None]), 0.0)
    dp = dot(do, v_ref[cols, :], trans_b=True)
    ds = p * (dp - delta[:, None])
    return dq + dot(ds.astype(k.dtype), k)

  dq = jax.lax.fori_loop(0, layout_ref[num_slots], body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(columns_ref, q_ref, k_ref, v_ref, real_ref, seg_ref, key_ok_ref, do_ref,
                lse_ref, delta_ref, dk_ref, dv_ref, *, block_size, num_slots, window_tokens,
                precision):
  dot = functools.partial(_product, precision=precision)
  j = pl.program_id(0)
  cols = pl.ds(j * block_size, block_size)
  k, v = k_ref[...], v_ref[...]
  k_real, k_seg, k_ok = real_ref[cols] != 0, seg_ref[cols], key_ok_ref[cols] != 0

  def body(slot, carry):
    dk, dv = carry
    i = columns_ref[slot]
    rows = pl.ds(jnp.maximum(i, 0) * block_size, block_size)
    q, do = q_ref[rows, :], do_ref[rows, :]
    ok = _allowed(i, j, block_size=block_size, window_tokens=window_tokens,
                  q_real=real_ref[rows] != 0, q_seg=seg_ref[rows], k_real=k_real, k_seg=k_seg,
                  k_ok=k_ok & (i >= 0))
    p = jnp.where(ok, jnp.exp(dot(q, k, trans_b=True) - lse_ref[rows][:, None]), 0.0)
    dv = dv + dot(p.astype(do.dtype), do, trans_a=True)
    dp = dot(do, v, trans_b=True)
    ds = p * (dp - delta_ref[rows][:, None])
    dk = dk + dot(ds.astype(q.dtype), q, trans_a=True)
    return dk, dv

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = jax.lax.fori_loop(0, columns_ref[num_slots], body, (zeros, zeros))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


class _Static:
  """Hashable static arguments of one kernel call (nondiff args of the custom VJP)."""

  def __init__(self, layout: np.ndarray, block_size: int, window_tokens: int | None,
               interpret: bool, num_warps: int | None, num_stages: int,
               precision: jax.lax.Precision):
    layout = np.ascontiguousarray(layout, np.int32)
    self.layout = with_counts(layout)
    self.columns = with_counts(transpose_layout(layout, layout.shape[1]))
    self.block_size, self.window_tokens = block_size, window_tokens
    self.interpret, self.num_warps, self.num_stages = interpret, num_warps, num_stages
    self.precision = precision
    self._key = (self.layout.tobytes(), self.layout.shape, block_size, window_tokens, interpret,
                 num_warps, num_stages, precision)

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _Static) and self._key == other._key

  def call(self, kernel, grid_rows, table, inputs, in_specs, out_shape, out_specs, name):
    """pallas_call over the grid (block, batch, head); `table` [heads, blocks, width + 1] (block
    ids, then their count: `with_counts`) is read one row per program (that head's, or the
    shared one)."""
    heads = table.shape[0]
    table_spec = pl.BlockSpec((None, None, table.shape[2]),
                              lambda i, b, h: (h if heads > 1 else 0, i, 0))
    batch, _, num_heads, head_dim = inputs[0].shape
    params = plgpu.CompilerParams(
        num_warps=self.num_warps or (4 if head_dim <= 64 else 8), num_stages=self.num_stages)
    return pl.pallas_call(
        functools.partial(kernel, block_size=self.block_size, window_tokens=self.window_tokens,
                          num_slots=table.shape[2] - 1, precision=self.precision),
        grid=(grid_rows, batch, num_heads), in_specs=[table_spec, *in_specs],
        out_specs=out_specs, out_shape=out_shape, compiler_params=params,
        interpret=self.interpret, name=name)(jnp.asarray(table), *inputs)


def _specs(length: int, head_dim: int, block_size: int):
  """BlockSpecs over grid (block, batch, head) of [b, n, h, d] and [b, n] / [b, h, n] arrays."""
  full = pl.BlockSpec((None, length, None, head_dim), lambda i, b, h: (b, 0, h, 0))
  block = pl.BlockSpec((None, block_size, None, head_dim), lambda i, b, h: (b, i, h, 0))
  tokens = pl.BlockSpec((None, length), lambda i, b, h: (b, 0))
  shared = pl.BlockSpec((length,), lambda i, b, h: (0,))
  rows = pl.BlockSpec((None, None, block_size), lambda i, b, h: (b, h, i))
  per_head = pl.BlockSpec((None, None, length), lambda i, b, h: (b, h, 0))
  return full, block, tokens, shared, rows, per_head


def _forward(static: _Static, q, k, v, real, segments, key_ok):
  b, n, h, d = q.shape
  bs = static.block_size
  full, block, tokens, shared, rows, _ = _specs(n, d, bs)
  out, lse = static.call(
      _forward_kernel, n // bs, static.layout, (q, k, v, real, segments, key_ok),
      [block, full, full, tokens, tokens, shared],
      [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, n), jnp.float32)],
      [block, rows], "block_sparse_attention_fwd")
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(static, q, k, v, real, segments, key_ok):
  return _forward(static, q, k, v, real, segments, key_ok)


def _attention_fwd(static, q, k, v, real, segments, key_ok):
  out, lse = _forward(static, q, k, v, real, segments, key_ok)
  return (out, lse), (q, k, v, real, segments, key_ok, out, lse)


def _attention_bwd(static, residuals, cotangents):
  q, k, v, real, segments, key_ok, out, lse = residuals
  dout, dlse = cotangents
  # FlashAttention's D = rowsum(dO * O), less the log-sum-exp's own cotangent:
  # dL/ds_ij = p_ij (dO_i . v_j - D_i + dlse_i).
  delta = jnp.einsum("bnhd,bnhd->bhn", dout.astype(jnp.float32), out.astype(jnp.float32))
  delta = delta - dlse
  dout = dout.astype(q.dtype)
  b, n, h, d = q.shape
  bs = static.block_size
  full, block, tokens, shared, rows, per_head = _specs(n, d, bs)
  inputs = (q, k, v, real, segments, key_ok, dout, lse, delta)
  (dq,) = static.call(
      _dq_kernel, n // bs, static.layout, inputs,
      [block, full, full, tokens, tokens, shared, block, rows, rows],
      [jax.ShapeDtypeStruct(q.shape, q.dtype)], [block], "block_sparse_attention_dq")
  dk, dv = static.call(
      _dkv_kernel, n // bs, static.columns, inputs,
      [full, block, block, tokens, tokens, shared, full, per_head, per_head],
      [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      [block, block], "block_sparse_attention_dkv")
  return dq, dk, dv, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, layout: np.ndarray, *, block_size: int,
              real: jax.Array, segments: jax.Array, key_ok: np.ndarray,
              window_tokens: int | None = None, interpret: bool = False,
              num_warps: int | None = None, num_stages: int = 2) -> tuple[jax.Array, jax.Array]:
  """Softmax attention over a static block layout, as one Pallas kernel per pass.

  Args:
    q, k, v: [batch, n, heads, head_dim], n a multiple of `block_size`; q pre-scaled.
    layout: int [1 | heads, n / block_size, per_row] key-block ids per query block, -1 unused.
    block_size: tokens per block (a power of two >= 16, a Triton tile).
    real: [batch, n] nonzero for real tokens; segments: int [batch, n] segment ids.
    key_ok: [n] nonzero for keys the layout's blocks may use (not past the length, not global).
    window_tokens: None, or w: keys in blocks within ceil(w / block_size) of the query's block
      count only when |i - j| <= w.
    interpret: run the kernels in Pallas' interpreter (CPU tests).

  Returns:
    (out [batch, n, heads, head_dim] in q's dtype, lse f32 [batch, heads, n]); both
    differentiable.
  """
  static = _Static(np.asarray(layout), block_size, window_tokens, interpret, num_warps,
                   num_stages, f32_precision())
  return _attention(static, q, k, v, real.astype(jnp.int32), segments.astype(jnp.int32),
                    jnp.asarray(key_ok, jnp.int32))
