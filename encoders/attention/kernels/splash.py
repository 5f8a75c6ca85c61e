"""Our attention layouts on TPU splash attention (`jax.experimental.pallas.ops.tpu.
splash_attention`): block-sparse flash attention whose kernels skip the all-masked tiles of a
static mask and apply the partial ones (MaxText's attention kernel on TPU).

The static mask is our layout (`splash_mask.LayoutMask`, per head where the layout is, as
BigBird's random blocks), its block tables built from the layout (`splash_mask.mask_infos`).
Global tokens stay out of it: a global key column or query row would make every tile row or
column non-empty, so splash could not shrink its grid, and at 64K tokens its tables outgrow the
TPU's scalar memory. Instead the global keys are one more small key group, computed in XLA and
merged with splash's output through the log-sum-exps, forward and backward (`_with_global_keys`:
splash's own backward kernels run with the merged output and log-sum-exp, which is the gradient
of the merged softmax over its keys); the global queries' rows are recomputed densely by the
caller, as the XLA engine does. Padding and packing go through `SegmentIds`: a real token's id is
its segment, padding gets -1 and the internal padding up to the kernel's tile -2, so a real query
sees real keys of its segment (a padding query sees the padding; its output is ignored, as
everywhere). Batch: `vmap` (splash has no batch axis).

Splash does not check for a query row with no allowed key (it returns a mean of values there);
our XLA engine returns 0. Rows whose static mask lacks their own position are the only ones that
can end up empty, so those (none for the registered layouts, global rows aside) are checked
against the segments and zeroed.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

from encoders.attention.kernels.splash_mask import LayoutMask, mask_infos

GRANULE = 128  # splash's kv compute blocks are multiples of 128 tokens
NEG = -1e30  # the log-sum-exp of a row with no key


def kernel_block(block: int | None, layout_block: int) -> int:
  """Splash's tile: `block`, else the layout's block rounded up to the 128-token granule."""
  return block or -(-layout_block // GRANULE) * GRANULE


def _block_sizes(block: int) -> splash.BlockSizes:
  return splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                           block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                           block_q_dq=block, block_kv_dq=block)


def _arguments(mask: LayoutMask, block: int, interpret: bool) -> dict:
  """The keyword arguments of splash's kernel function for `mask`, without q, k, v and segment
  ids. The tables become jax arrays where they are used (`_on_device`): cached jax arrays made
  while a step is traced under a mesh would be tracers of that trace."""
  fwd, dkv = mask_infos(mask, block)
  return dict(fwd_mask_info=fwd, dq_mask_info=fwd, dkv_mask_info=dkv,
              save_residuals=False, mask_value=splash.DEFAULT_MASK_VALUE, is_mqa=False,
              block_sizes=_block_sizes(block), residual_checkpoint_name=None,
              mask_function=None, attn_logits_soft_cap=None, interpret=interpret)


def _on_device(arguments: dict) -> dict:
  return {key: jax.tree.map(jnp.asarray, value) if key.endswith("mask_info") else value
          for key, value in arguments.items()}


def _accepted(fn, arguments: dict) -> dict:
  """`arguments` that `fn` takes (splash's signature gained `sinks` across jax versions)."""
  names = inspect.signature(fn).parameters
  out = {key: value for key, value in arguments.items() if key in names}
  if "sinks" in names:
    out["sinks"] = None
  return out


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: LayoutMask, *, block: int,
              real: jax.Array | None, segment_ids: jax.Array | None,
              global_keys: np.ndarray | None = None, interpret: bool = False) -> jax.Array:
  """Splash attention of pre-scaled q over the static `mask` (`mask.size` a multiple of
  `block`, >= length), plus, for every query, the keys at `global_keys` (token indices that
  `mask` hides).

  Args:
    q, k, v: [batch, length, heads, head_dim].
    real: [batch, length] True for real tokens (None: all); segment_ids: [batch, length].

  Returns:
    [batch, length, heads, head_dim] in q's dtype.
  """
  b, n, h, d = q.shape
  size = mask.size
  ids = jnp.zeros((b, n), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
  if real is not None:
    ids = jnp.where(real, ids, -1)
  ids = jnp.pad(ids, ((0, 0), (0, size - n)), constant_values=-2)

  def heads_first(x):  # [b, n, h, d] -> [b, h, size, d]
    return jnp.pad(x, ((0, 0), (0, size - n), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  arguments = _arguments(mask, block, interpret)
  if global_keys is None or len(global_keys) == 0:
    run = functools.partial(_splash, arguments)
    out = jax.vmap(run)(heads_first(q), heads_first(k), heads_first(v), ids)
  else:
    gidx = np.asarray(global_keys)
    kg, vg = (x[:, gidx].transpose(0, 2, 1, 3) for x in (k, v))  # [b, h, G, d]
    key_ok = ids[:, None, :] == ids[:, gidx, None]  # [b, G, size]: same segment, both real
    run = _with_global_keys(arguments)
    out = jax.vmap(run)(heads_first(q), heads_first(k), heads_first(v), ids, kg, vg, key_ok)
  out = out.transpose(0, 2, 1, 3)[:, :n]
  return _zero_empty_rows(out, mask, ids, n, global_keys).astype(q.dtype)


def _splash(arguments, q, k, v, ids):
  """One example through splash's public kernel function ([heads, size, d])."""
  on_device = _on_device(arguments)
  kernel = splash.SplashAttentionKernel(
      on_device.pop("fwd_mask_info"), on_device.pop("dq_mask_info"),
      on_device.pop("dkv_mask_info"), **on_device)
  return kernel(q, k, v, splash.SegmentIds(ids, ids))


def _global_scores(q, kg, key_ok):
  scores = jnp.einsum("hsd,hgd->hsg", q, kg, preferred_element_type=jnp.float32)
  return jnp.where(key_ok.T[None], scores, -jnp.inf)


def _with_global_keys(arguments: dict):
  """f(q, k, v, ids, kg, vg, key_ok) for one example: the softmax over the union of splash's keys
  and the global keys kg, vg [heads, G, d] (key_ok [G, size]: which queries may see each)."""
  fwd_fn, bwd_fn = splash._splash_attention_fwd, splash._splash_attention_bwd

  def forward(q, k, v, ids, kg, vg, key_ok):
    out, residuals = fwd_fn(**_accepted(fwd_fn, dict(
        _on_device(arguments), q=q, k=k, v=v, segment_ids=splash.SegmentIds(ids, ids))))
    splash_lse = next(r for r in residuals if getattr(r, "ndim", None) == 2)  # [heads, size]
    # A row whose tiles splash skipped entirely (all its keys global) has lse -inf, output NaN.
    some = jnp.isfinite(splash_lse)
    lse = jnp.where(some, splash_lse, NEG)
    scores = _global_scores(q, kg, key_ok)
    lse_g = jax.nn.logsumexp(scores, axis=-1)
    total = jnp.logaddexp(lse, jnp.where(jnp.isfinite(lse_g), lse_g, NEG))
    p = jnp.exp(scores - total[..., None])
    kept = jnp.where(some[..., None], out.astype(jnp.float32), 0.0)
    merged = (kept * jnp.exp(lse - total)[..., None]
              + jnp.einsum("hsg,hgd->hsd", p.astype(vg.dtype), vg,
                           preferred_element_type=jnp.float32)).astype(out.dtype)
    # Splash's backward reads its output and log-sum-exp from the residuals: the merged ones
    # make it the gradient of the merged softmax over splash's keys.
    residuals = tuple(merged if r is out else total if r is splash_lse else r
                      for r in residuals)
    return merged, (residuals, q, kg, vg, key_ok, merged, total)

  def backward(saved, d_out):
    residuals, q, kg, vg, key_ok, merged, total = saved
    nondiff = {key: value for key, value in _accepted(fwd_fn, arguments).items()
               if not key.endswith("mask_info")}
    grads = bwd_fn(**_accepted(bwd_fn, dict(nondiff, res=residuals, do=d_out)))
    diff_names = [name for name in inspect.signature(fwd_fn).parameters if name not in nondiff]
    dq, dk, dv = (grads[diff_names.index(name)] for name in ("q", "k", "v"))
    p = jnp.exp(_global_scores(q, kg, key_ok) - total[..., None])  # [heads, size, G]
    d_out32 = d_out.astype(jnp.float32)
    row = jnp.sum(merged.astype(jnp.float32) * d_out32, axis=-1, keepdims=True)
    d_scores = p * (jnp.einsum("hsd,hgd->hsg", d_out32, vg.astype(jnp.float32)) - row)
    dq = dq + jnp.einsum("hsg,hgd->hsd", d_scores, kg.astype(jnp.float32)).astype(dq.dtype)
    dkg = jnp.einsum("hsg,hsd->hgd", d_scores, q.astype(jnp.float32)).astype(kg.dtype)
    dvg = jnp.einsum("hsg,hsd->hgd", p, d_out32).astype(vg.dtype)
    return dq, dk, dv, None, dkg, dvg, None

  run = jax.custom_vjp(lambda *args: forward(*args)[0])
  run.defvjp(forward, backward)
  return run


def _zero_empty_rows(out: jax.Array, mask: LayoutMask, ids: jax.Array, n: int,
                     global_keys) -> jax.Array:
  """Zeroes rows with no allowed key (splash's output there is a mean of values)."""
  tokens = np.arange(n)
  own = np.stack([mask.values(h, tokens[:, None], tokens[:, None])[:, 0, 0]
                  for h in range(mask.heads)])  # [heads', n]
  gidx = np.asarray([] if global_keys is None else global_keys, np.int64)
  rows = np.flatnonzero(~own.all(axis=0) & ~np.isin(tokens, gidx))
  if rows.size == 0:
    return out
  static = np.stack([mask.values(h, rows, np.arange(mask.size)) for h in range(mask.heads)])
  static[:, :, gidx] = True  # [heads', R, size]
  same = ids[:, rows, None] == ids[:, None, :]  # [b, R, size]
  some = jnp.any(static[None] & same[:, None], axis=-1)  # [b, heads', R]
  kept = jnp.where(some.transpose(0, 2, 1)[..., None], out[:, rows], 0)  # NaN where none
  return out.at[:, rows].set(kept)
