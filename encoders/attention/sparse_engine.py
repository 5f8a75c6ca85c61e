"""The block-sparse attention engine: exact softmax over the key blocks a static layout lists.

One engine serves every fixed sparsity pattern in `layouts.py`: sliding windows (Beltagy et al.
2020, "Longformer"), block-diagonal (Qiu et al. 2020, "Blockwise Self-Attention"), strided and
fixed patterns (Child et al. 2019, "Generating Long Sequences with Sparse Transformers") and
window + global + random blocks (Zaheer et al. 2020, "Big Bird").

The sequence is padded internally to `num_blocks * block_size` and cut into blocks. A layout is a
static int array [num_blocks, blocks_per_row] (shared by all heads) or [heads, num_blocks,
blocks_per_row] (one pattern per head): row i lists the key blocks query block i attends to, -1
marking unused slots. Global tokens (static token indices) attend to every key and are attended
by every query.

Windows are block-granular by default: a layout block counts whole. With `window_tokens` w the
window is token-level, as Longformer's (|i - j| <= w): the layout lists the ceil(w / block_size)
blocks each side that cover +-w tokens around every query of a block, and inside those blocks a
key counts only when |i - j| <= w; layout blocks farther away (BigBird's random blocks) still
count whole. Row distance equals in-segment distance for tokens of one segment, so with segment
ids a token sees the same keys wherever its sequence sits in a packed row (block-granular
windows do not: which keys share a block depends on the offset).

Every query block meets its keys in groups: one per layout slot (the slot's key block, gathered
for all query blocks at once: [batch, heads, num_blocks, block_size, block_size] scores) and one
of the global keys (left out of the slots, so no key counts twice). Groups are folded into one
exact softmax with a running max and normaliser, as in FlashAttention (Dao et al. 2022), and a
custom VJP recomputes each group's scores in the backward pass from the saved output and
log-sum-exp. So no gathered key copy and no score tensor of more than one group is ever kept:
memory is O(n * block_size) per group plus O(n * head_dim), FLOPs O(n * blocks_per_row *
block_size); never n x n. The global queries' rows are recomputed densely, O(num_global * n).
Scores and softmax are f32 whatever the input dtype. A position bias is evaluated up front for
every kept pair (a Flax position module cannot run inside the scan), one more O(n *
blocks_per_row * block_size) array when it is used.

Masking follows `dense_attention_mask`: a real query sees real keys of its own segment; padding
queries may attend anywhere (their outputs are ignored). A row left with no allowed key outputs
zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from encoders.attention import layouts

# bias(q_index, k_index) -> f32 [batch, heads, ..., Q, K]; see encoders.attention.base.
Bias = Callable[[np.ndarray, np.ndarray], jax.Array]
_NEG = -1e30  # initial running max: finite, so exp(_NEG - max) is 0, never NaN


def num_blocks(length: int, block_size: int) -> int:
  return -(-length // block_size)


class _Group(NamedTuple):
  """One key group, seen by every query block: a layout slot or the global keys.

  For the slots, each field has a leading [per_row] axis (they are scanned over).
  """
  slot: np.ndarray | None  # [1 | heads, num_blocks] key block per query block; None = globals
  k_index: np.ndarray  # [1 | heads, num_blocks | 1, K] token index of every key
  static_ok: np.ndarray  # [1 | heads, num_blocks, K] key exists and no other group holds it
  near: np.ndarray | None  # [1 | heads, num_blocks] slot within the token window's reach


def pair_ok(real: jax.Array | None, segments: jax.Array | None, q_index: np.ndarray,
             k_index: jax.Array) -> jax.Array | None:
  """Bool [batch, ..., Q, K]: (key real and same segment) or query is padding; None = all."""
  ok = None
  if segments is not None:
    ok = segments[:, q_index][..., :, None] == segments[:, k_index][..., None, :]
  if real is not None:
    key_real = real[:, k_index][..., None, :]
    ok = key_real if ok is None else ok & key_real
    ok = ok | ~real[:, q_index][..., :, None]
  return ok


def _slot_index(x: jax.Array, slot: jax.Array) -> tuple:
  """Index of the blocks one slot reads from x [batch, heads, blocks, bs, d]: [b, h, rows, ...].
  Unused slots (-1) read block 0; they are masked."""
  slot = jnp.maximum(slot, 0)
  if slot.shape[0] == 1:
    return (slice(None), slice(None), slot[0])
  return (slice(None), np.arange(x.shape[1])[:, None], slot)


def _einsum(group: _Group, spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """f32 einsum where `K` names the group's keys: per query block or shared (globals)."""
  keys = "bhjd" if group.slot is None else "bhqjd"
  return jnp.einsum(spec.replace("K", keys), a, b, preferred_element_type=jnp.float32)


def _exp(scores: jax.Array, allowed: jax.Array, shift: jax.Array) -> jax.Array:
  """exp(scores - shift) on allowed entries, exactly 0 elsewhere."""
  return jnp.exp(jnp.where(allowed, scores - shift[..., None], -jnp.inf))


def _normalise(out: jax.Array, total: jax.Array) -> jax.Array:
  return out / jnp.where(total > 0, total, 1.0)[..., None]


def _block_softmax(slots: _Group, globs: _Group | None, q_index: np.ndarray, rate: float,
                   window_tokens: int | None):
  """softmax(q k^T + bias) v over the key groups, as a function of blocked q, k, v
  [b, h, nq, bs, d], global keys/values [b, h, G, d] (or None), biases (slot biases stacked
  [per_row, b, h, nq, bs, bs] and the global ones, or None), masks and a dropout rng.

  Slots are folded in with `lax.scan`, so only one slot's scores exist at a time.
  """
  per_row = slots.slot.shape[0]

  def scores(group, bias, qb, keys, real, segments):
    s = _einsum(group, "bhqid,K->bhqij", qb, keys)
    if bias is not None:
      s = s + bias
    ok = pair_ok(real, segments, q_index, group.k_index)
    static = group.static_ok[None, :, :, None, :]
    if group.near is not None:  # token-level window inside the blocks it reaches
      distance = jnp.abs(q_index[..., :, None] - group.k_index[..., None, :])
      static = static & ((distance <= window_tokens) | ~group.near[..., None, None])[None]
    return s, static if ok is None else ok & static

  def dropout_scale(j, rng, shape):
    keep = jax.random.bernoulli(jax.random.fold_in(rng, j), 1.0 - rate, shape)
    return keep.astype(jnp.float32) / (1.0 - rate)

  def each_group(step, carry, kb, vb, kg, vg, biases):
    """Runs step(carry, group, bias, j, keys, values) -> (carry, y) over slots then globals."""
    slot_bias, glob_bias = (None, None) if biases is None else biases

    def scan_step(carry, xs):
      group, bias, j = _Group(*xs[:4]), xs[4], xs[5]
      index = _slot_index(kb, group.slot)
      return step(carry, group, bias, j, kb[index], vb[index])

    carry, ys = jax.lax.scan(scan_step, carry, (*slots, slot_bias, jnp.arange(per_row)))
    glob_y = None
    if globs is not None:
      carry, glob_y = step(carry, globs, glob_bias, per_row, kg, vg)
    return carry, (ys, glob_y)

  def forward(qb, kb, vb, kg, vg, biases, real, segments, rng):
    def step(carry, group, bias, j, keys, values):
      row_max, total, out = carry
      s, ok = scores(group, bias, qb, keys, real, segments)
      new_max = jnp.maximum(row_max, jnp.max(jnp.where(ok, s, -jnp.inf), axis=-1))
      p = _exp(s, ok, new_max)
      correction = jnp.exp(row_max - new_max)
      total = total * correction + jnp.sum(p, axis=-1)
      if rng is not None:
        p = p * dropout_scale(j, rng, p.shape)
      out = out * correction[..., None] + _einsum(group, "bhqij,K->bhqid",
                                                  p.astype(vb.dtype), values)
      return (new_max, total, out), None

    init = (jnp.full(qb.shape[:-1], _NEG, jnp.float32), jnp.zeros(qb.shape[:-1], jnp.float32),
            jnp.zeros(qb.shape, jnp.float32))
    (row_max, total, out), _ = each_group(step, init, kb, vb, kg, vg, biases)
    lse = jnp.where(total > 0, row_max + jnp.log(jnp.where(total > 0, total, 1.0)), 0.0)
    return _normalise(out, total), lse

  @jax.custom_vjp
  def attend(qb, kb, vb, kg, vg, biases, real, segments, rng):
    return forward(qb, kb, vb, kg, vg, biases, real, segments, rng)[0]

  def attend_fwd(qb, kb, vb, kg, vg, biases, real, segments, rng):
    out, lse = forward(qb, kb, vb, kg, vg, biases, real, segments, rng)
    return out, (qb, kb, vb, kg, vg, biases, real, segments, rng, out, lse)

  def attend_bwd(residuals, dout):
    qb, kb, vb, kg, vg, biases, real, segments, rng, out, lse = residuals
    delta = jnp.sum(dout * out, axis=-1)  # sum_j p_ij dp_ij, FlashAttention's D
    dout = dout.astype(vb.dtype)

    def step(carry, group, bias, j, keys, values):
      dq, dkb, dvb, dkg, dvg = carry
      s, ok = scores(group, bias, qb, keys, real, segments)
      p = _exp(s, ok, lse)
      dp = _einsum(group, "bhqid,K->bhqij", dout, values)
      kept = p
      if rng is not None:
        scale = dropout_scale(j, rng, p.shape)
        dp, kept = dp * scale, p * scale
      ds = p * (dp - delta[..., None])
      dq = dq + _einsum(group, "bhqij,K->bhqid", ds.astype(qb.dtype), keys)
      dk = _einsum(group, "bhqij,bhqid->K", ds.astype(qb.dtype), qb)
      dv = _einsum(group, "bhqij,bhqid->K", kept.astype(vb.dtype), dout)
      if group.slot is None:
        dkg, dvg = dkg + dk, dvg + dv
      else:
        index = _slot_index(dkb, group.slot)
        dkb, dvb = dkb.at[index].add(dk), dvb.at[index].add(dv)
      return (dq, dkb, dvb, dkg, dvg), None if bias is None else ds

    primals = (qb, kb, vb, kg, vg)
    init = tuple(None if x is None else jnp.zeros(x.shape, jnp.float32) for x in primals)
    grads, dbiases = each_group(step, init, kb, vb, kg, vg, biases)
    grads = tuple(None if g is None else g.astype(x.dtype) for g, x in zip(grads, primals))
    return (*grads, None if biases is None else dbiases, None, None, None)

  attend.defvjp(attend_fwd, attend_bwd)
  return attend


def attention(q: jax.Array, k: jax.Array, v: jax.Array, layout: np.ndarray, *,
              block_size: int, global_tokens: Sequence[int] = (),
              mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
              bias: Bias | None = None, window_tokens: int | None = None,
              dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None) -> jax.Array:
  """Exact softmax attention restricted to a static block layout plus global tokens.

  Args:
    q, k, v: [batch, length, heads, head_dim].
    layout: int [num_blocks, per_row] or [heads, num_blocks, per_row] key-block ids, -1 unused;
      num_blocks = ceil(length / block_size).
    block_size: tokens per block.
    global_tokens: token indices in [0, length) that attend to and are attended by all.
    mask: [batch, length] True for real tokens.
    segment_ids: [batch, length]; only same-segment pairs interact.
    bias: optional callable (q_index, k_index) -> f32 [batch, heads, ..., Q, K] of additive
      logit biases, given int token indices [1 | heads, ..., Q] and [1 | heads, ..., K].
    window_tokens: None (layout blocks count whole) or w >= 0: in the layout blocks at most
      ceil(w / block_size) blocks from the query's block, only keys with |i - j| <= w count.
    dropout_rate, dropout_rng: attention-weight dropout (off when the rng is None).

  Returns:
    [batch, length, heads, head_dim] in q's dtype.
  """
  b, n, h, d = q.shape
  bs = block_size
  layout = np.asarray(layout)
  layout = layout[None] if layout.ndim == 2 else layout
  nh, nq, per_row = layout.shape
  if nq != num_blocks(n, bs) or nh not in (1, h):
    raise ValueError(f"layout shape {layout.shape} does not fit length {n}, block size {bs} "
                     f"and {h} heads")
  gidx = np.unique(np.asarray(global_tokens, np.int64))
  if gidx.size and (gidx[0] < 0 or gidx[-1] >= n):
    raise ValueError(f"global tokens {gidx} outside [0, {n})")
  pad = nq * bs - n
  scale = 1.0 / np.sqrt(d)

  # Static token indices (into the internally padded length) of queries and of each group's
  # keys; the slots stacked along a leading axis.
  q_index = np.arange(nq * bs).reshape(1, nq, bs)
  slot = np.moveaxis(layout, -1, 0)  # [per_row, nh, nq]
  k_index = (np.maximum(slot, 0) * bs)[..., None] + np.arange(bs)
  static_ok = (slot >= 0)[..., None] & (k_index < n) & ~np.isin(k_index, gidx)
  near = None
  if window_tokens is not None:
    reach = layouts.window_reach(window_tokens, bs)
    near = (slot >= 0) & (np.abs(slot - np.arange(nq)) <= reach)
  slots = _Group(slot, k_index, static_ok, near)
  globs = None
  if gidx.size:
    globs = _Group(None, gidx[None, None], np.ones((1, nq, gidx.size), bool), None)

  real = None if mask is None else jnp.pad(mask.astype(bool), ((0, 0), (0, pad)))
  segments = None if segment_ids is None else jnp.pad(segment_ids, ((0, 0), (0, pad)),
                                                      constant_values=-1)

  def blocked(x):  # [b, n, h, d] -> [b, h, blocks, bs, d]
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return x.reshape(b, nq, bs, h, d).transpose(0, 3, 1, 2, 4)

  def global_kv(x):  # [b, n, h, d] -> [b, h, G, d]
    return jnp.take(x, gidx, axis=1).transpose(0, 2, 1, 3) if gidx.size else None

  def group_bias(k_index):  # [b, h, nq, bs, K]; index clipped to the length of `positions`
    keys = bias(np.minimum(q_index, n - 1), np.minimum(k_index, n - 1))
    return jnp.broadcast_to(keys, (b, h, nq, bs, k_index.shape[-1]))

  biases = None
  if bias is not None:  # computed up front: a position module cannot run inside lax.scan
    biases = (jnp.stack([group_bias(i) for i in k_index]),
              None if globs is None else group_bias(globs.k_index))
  rng = None if dropout_rate == 0.0 else dropout_rng
  out = _block_softmax(slots, globs, q_index, dropout_rate, window_tokens)(
      blocked(q * jnp.asarray(scale, q.dtype)), blocked(k), blocked(v), global_kv(k),
      global_kv(v), biases, real, segments, None if rng is None else jax.random.fold_in(rng, 0))
  out = out.transpose(0, 2, 3, 1, 4).reshape(b, nq * bs, h, d)[:, :n].astype(q.dtype)
  if gidx.size:
    rows = global_rows(q * jnp.asarray(scale, q.dtype), k, v, gidx, real, segments, bias,
                        dropout_rate, None if rng is None else jax.random.fold_in(rng, 1))
    out = out.at[:, gidx].set(rows.astype(q.dtype))
  return out


def global_rows(q, k, v, gidx, real, segments, bias, rate, rng):
  """Dense attention of the (pre-scaled) global queries over all keys: [batch, G, heads, d]."""
  keys = np.arange(k.shape[1])[None]
  scores = jnp.einsum("bghd,bkhd->bhgk", jnp.take(q, gidx, axis=1), k,
                      preferred_element_type=jnp.float32)
  if bias is not None:
    scores = scores + bias(gidx[None], keys)
  ok = pair_ok(real, segments, gidx[None], keys)
  allowed = jnp.ones((), bool) if ok is None else ok
  row_max = jnp.max(jnp.where(allowed, scores, -jnp.inf), axis=-1)
  p = _exp(scores, allowed, jax.lax.stop_gradient(jnp.maximum(row_max, _NEG)))
  total = jnp.sum(p, axis=-1)
  if rng is not None:
    p = jnp.where(jax.random.bernoulli(rng, 1.0 - rate, p.shape), p / (1.0 - rate), 0.0)
  out = jnp.einsum("bhgk,bkhd->bhgd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return _normalise(out, total).transpose(0, 2, 1, 3)
