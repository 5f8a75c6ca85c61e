"""The block-sparse engine and its layouts against dense attention with the equivalent mask;
token-level windows exact under packing at every offset; its memory bound; bf16; layout
builders; one training step per block-sparse variant."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.attention import layouts, sparse_engine, sparse_variants
from encoders.attention.base import dense_attention_mask
from encoders.attention.dense import DenseAttention
from encoders.errors import ConfigError
from tests.conftest import tiny_config

H, D = 4, 8
C = tiny_config()
VARIANTS = {  # name -> (module, options kept small so that short sequences have many blocks)
    "local": sparse_variants.LocalAttention(C, block_size=8, window=1),
    "block": sparse_variants.BlockAttention(C, block_size=8),
    "strided_fixed": sparse_variants.StridedAttention(C, block_size=4, stride=3, summary=1),
    "strided_strided": sparse_variants.StridedAttention(C, block_size=4, stride=2,
                                                        pattern="strided"),
    "bigbird": sparse_variants.BigBirdAttention(C, block_size=4, window=1, num_random_blocks=2),
    "longformer": sparse_variants.LongformerAttention(C, block_size=8, window=0,
                                                      global_tokens=(0, 13)),
    "local_tokens": sparse_variants.LocalAttention(C, block_size=4, window_tokens=5),
    "bigbird_tokens": sparse_variants.BigBirdAttention(C, block_size=4, window_tokens=3,
                                               num_random_blocks=2),
    "longformer_tokens": sparse_variants.LongformerAttention(C, block_size=8, window_tokens=3,
                                                     global_tokens=(0, 13)),
}
CASES = [(37, True, True), (50, False, False)]  # (length, padding, segments)


def alibi_like(positions):
  """An index -> bias callable as Attention builds it: per-head slopes times |k - q|."""
  slopes = jnp.asarray([0.5, 0.25, 0.1, 0.05])

  def bias(q_index, k_index):
    distance = jnp.abs(positions[:, k_index][..., None, :] - positions[:, q_index][..., :, None])
    return -slopes.reshape((H,) + (1,) * (distance.ndim - 2)) * distance

  return bias


def inputs(length, padded, segmented, batch=2, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  q, k, v, w = (jnp.asarray(rng.normal(size=(batch, length, H, D)), dtype) for _ in range(4))
  mask = np.ones((batch, length), bool)
  if padded:
    mask[1, length * 2 // 3:] = False
  segments = None
  if segmented:
    segments = jnp.asarray(np.cumsum(rng.random((batch, length)) < 0.15, axis=1))
  return q, k, v, w, jnp.asarray(mask), segments


def layout_mask(layout, global_tokens, length, block_size, window_tokens=None):
  """[heads, length, length] allowed pairs, built from the layout token by token; with a token
  window, keys of the blocks within its reach only when |i - j| <= window_tokens."""
  layout = np.broadcast_to(layout, (H,) + np.shape(layout)[-2:])
  reach = -1 if window_tokens is None else math.ceil(window_tokens / block_size)
  allowed = np.zeros((H, length, length), bool)
  for head in range(H):
    for i in range(length):
      for block in layout[head, i // block_size][layout[head, i // block_size] >= 0]:
        near = abs(block - i // block_size) <= reach
        for j in range(block * block_size, min((block + 1) * block_size, length)):
          allowed[head, i, j] = not near or abs(i - j) <= window_tokens
  allowed[:, :, list(global_tokens)] = True
  allowed[:, list(global_tokens), :] = True
  return allowed


@functools.partial(jax.jit, static_argnums=0)
def output_and_grads(attend, q, k, v, w, mask):
  """Outputs and d(sum(out * w over real queries))/d(q, k, v): padding rows are ignored."""
  out, vjp = jax.vjp(attend, q, k, v)
  return out * mask[:, :, None, None], vjp(w * mask[:, :, None, None])


def assert_close(a, b, atol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_layout_equals_dense_with_the_equivalent_mask(name):
  module = VARIANTS[name]
  for length, padded, segmented in CASES:
    q, k, v, w, mask, segments = inputs(length, padded, segmented)
    layout, global_tokens = module.layout(length, H)
    window_tokens = module.token_window()
    allowed = layout_mask(layout, global_tokens, length, module.block_size, window_tokens)[None]
    dense_mask = dense_attention_mask(mask, segments, length) & allowed
    bias = None
    if segmented:  # positions restart in each segment
      starts = np.maximum.accumulate(np.where(np.diff(segments, prepend=-1), np.arange(length), 0),
                                     axis=1)
      bias = alibi_like(jnp.asarray(np.arange(length) - starts))
    index = np.arange(length)[None]
    dense_bias = None if bias is None else bias(index, index)

    sparse = functools.partial(sparse_engine.attention, layout=layout,
                               block_size=module.block_size, global_tokens=global_tokens,
                               mask=mask, segment_ids=segments, bias=bias,
                               window_tokens=window_tokens)
    dense = functools.partial(jax.nn.dot_product_attention, bias=dense_bias, mask=dense_mask)
    assert_close(output_and_grads(sparse, q, k, v, w, mask),
                 output_and_grads(dense, q, k, v, w, mask))


@pytest.mark.parametrize("module", [sparse_variants.BlockAttention(C, block_size=32),
                                    sparse_variants.LocalAttention(C, block_size=8, window=4)],
                         ids=["block", "local"])
def test_covering_patterns_equal_dense(module):
  q, k, v, w, mask, segments = inputs(29, True, True)
  kwargs = dict(mask=mask, segment_ids=segments, deterministic=True)
  assert_close(output_and_grads(functools.partial(module.attend, **kwargs), q, k, v, w, mask),
               output_and_grads(functools.partial(DenseAttention(C).attend, **kwargs),
                                q, k, v, w, mask))


@pytest.mark.parametrize("position", ["alibi", "t5_relative"])
def test_position_bias_same_through_dense_and_engine(position):
  """A whole attention layer (projections + bias module) on padded rows whose positions are
  given (restarting mid-row). BigBird with a window covering the 7 blocks equals dense
  attention, and adds the bias per slot, to the global columns and to the global rows. (Packed
  rows with global tokens are refused: test_global_tokens_with_packed_rows_are_refused.)"""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 27, C.dim)), jnp.float32)
  mask = jnp.asarray(np.arange(27)[None] < np.array([[27], [20]]))
  positions = jnp.asarray(np.repeat([list(range(12)) + list(range(15))], 2, axis=0))
  kwargs = dict(mask=mask, positions=positions)
  options = dict(name="bigbird", block_size=4, window=6)
  sparse = tiny_config(attention=options, position={"name": position}).build("attention")
  dense = tiny_config(position={"name": position}).build("attention")
  params = nn.unbox(jax.jit(sparse.init)(jax.random.PRNGKey(0), x, **kwargs))["params"]
  if position == "t5_relative":  # make the learned table matter
    table = params["position_bias"]["relative_bias"]
    params["position_bias"]["relative_bias"] = jnp.asarray(rng.normal(size=table.shape))
  real = np.asarray(mask)

  def apply(module):
    return jax.jit(module.apply)({"params": params}, x, **kwargs)

  out = apply(sparse)
  np.testing.assert_allclose(out[real], apply(dense)[real], atol=1e-5)
  assert not np.allclose(out, apply(tiny_config(attention=options).build("attention")), atol=1e-3)


PACKED_ROW, LONGEST = 24, 12
WINDOWED = {  # window parts only: global tokens and random blocks are row positions
    "local_bs2_w1": sparse_variants.LocalAttention(C, block_size=2, window_tokens=1),
    "local_bs4_w0": sparse_variants.LocalAttention(C, block_size=4, window_tokens=0),
    "local_bs3_w5": sparse_variants.LocalAttention(C, block_size=3, window_tokens=5),
    "local_bs4_w4": sparse_variants.LocalAttention(C, block_size=4, window_tokens=4),
    "longformer_bs4_w3": sparse_variants.LongformerAttention(C, block_size=4, window_tokens=3,
                                                     global_tokens=()),
    "bigbird_bs3_w2": sparse_variants.BigBirdAttention(C, block_size=3, window_tokens=2,
                                                       global_blocks=(), num_random_blocks=0),
}


def every_placement(seed=0):
  """A sequence of every length 1..LONGEST at every offset of a packed row, between other
  sequences (segments 1 and 3; it is segment 2), and the same sequence alone at offset 0 of a
  padded row: packed (q, segments, mask), unpacked (q, mask), (case, length, offset) list."""
  rng = np.random.default_rng(seed)
  sequence = rng.normal(size=(LONGEST, H, D))
  cases = [(length, offset) for length in range(1, LONGEST + 1)
           for offset in range(PACKED_ROW - length + 1)]
  packed = rng.normal(size=(len(cases), PACKED_ROW, H, D))
  unpacked = rng.normal(size=(len(cases), PACKED_ROW, H, D))
  segments = np.ones((len(cases), PACKED_ROW), np.int32)
  alone = np.zeros((len(cases), PACKED_ROW), bool)
  for case, (length, offset) in enumerate(cases):
    packed[case, offset:offset + length] = sequence[:length]
    unpacked[case, :length] = sequence[:length]
    segments[case, offset:offset + length] = 2
    segments[case, offset + length:] = 3
    alone[case, :length] = True
  return (jnp.asarray(packed, jnp.float32), jnp.asarray(segments),
          jnp.asarray(unpacked, jnp.float32), jnp.asarray(alone), cases)


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_token_windows_are_exact_under_packing_at_every_offset(name):
  """Packed == unpacked per token for every length and offset (so segments straddle block
  boundaries every way), for windows smaller than, equal to and larger than a block. The same
  layout with block-granular windows depends on the offset (the bug this option fixes)."""
  module = WINDOWED[name]
  packed, segments, unpacked, alone, cases = every_placement()
  layout, global_tokens = module.layout(PACKED_ROW, H)
  assert global_tokens == ()

  def outputs(window_tokens):
    attend = jax.jit(functools.partial(sparse_engine.attention, layout=layout,
                                       block_size=module.block_size,
                                       window_tokens=window_tokens))
    return (np.asarray(attend(packed, packed, packed, segment_ids=segments)),
            np.asarray(attend(unpacked, unpacked, unpacked, mask=alone)))

  def mismatch(window_tokens):
    out_packed, out_unpacked = outputs(window_tokens)
    return max(np.abs(out_packed[case, offset:offset + length] - out_unpacked[case, :length]).max()
               for case, (length, offset) in enumerate(cases))

  assert mismatch(module.token_window()) < 1e-5
  if module.block_size > 1:
    assert mismatch(None) > 1e-3


def largest_intermediate(jaxpr) -> int:
  """Most elements of any value in a jaxpr, sub-jaxprs (scan bodies, custom VJPs) included."""
  biggest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      biggest = max(biggest, math.prod(getattr(var.aval, "shape", ())))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, "eqns"):
          biggest = max(biggest, largest_intermediate(sub))
        elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          biggest = max(biggest, largest_intermediate(sub.jaxpr))
  return biggest


def test_engine_never_materialises_a_length_squared_array():
  n, bs, heads = 4096, 64, 2
  q = jax.ShapeDtypeStruct((1, n, heads, 64), jnp.float32)
  mask = jnp.ones((1, n), bool)
  segments = jnp.zeros((1, n), jnp.int32)
  c = tiny_config(num_heads=heads)

  def bias(q_index, k_index):
    return -jnp.abs(k_index[..., None, :] - q_index[..., :, None])[None].astype(jnp.float32)

  def largest(attend, **kwargs):
    def loss(q, k, v):
      return jnp.sum(attend(q, k, v, **kwargs) ** 2)

    return largest_intermediate(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, q, q).jaxpr)

  for module in (sparse_variants.LocalAttention(c, block_size=bs, window=2),
                 sparse_variants.LocalAttention(c, block_size=bs, window_tokens=100),
                 sparse_variants.BigBirdAttention(c, block_size=bs),
                 sparse_variants.LongformerAttention(c, block_size=bs,
                                                     global_tokens=(0, 100, 2000))):
    layout, global_tokens = module.layout(n, heads)
    assert largest(sparse_engine.attention, layout=layout, block_size=bs,
                   global_tokens=global_tokens, mask=mask, segment_ids=segments, bias=bias,
                   window_tokens=module.token_window()) < n * n, type(module).__name__
  assert largest(jax.nn.dot_product_attention) >= n * n  # the check does see n x n arrays


def test_bfloat16_runs_and_stays_close_to_float32():
  module = VARIANTS["bigbird"]
  q, k, v, w, mask, segments = inputs(37, True, True)
  layout, global_tokens = module.layout(37, H)
  attend = functools.partial(sparse_engine.attention, layout=layout, block_size=4,
                             global_tokens=global_tokens, mask=mask, segment_ids=segments)
  out32, grads32 = output_and_grads(attend, q, k, v, w, mask)
  half = [x.astype(jnp.bfloat16) for x in (q, k, v, w)]
  out16, grads16 = output_and_grads(attend, *half[:3], half[3], mask)
  assert out16.dtype == jnp.bfloat16
  assert_close(out16, out32, atol=5e-2)
  assert_close(grads16, grads32, atol=1e-1)


def test_rows_without_keys_give_zeros_and_finite_gradients():
  q, k, v, w, _, _ = inputs(8, False, False, batch=1)
  layout = np.array([[0], [-1]])  # the second block attends to nothing
  out, grads = output_and_grads(
      lambda *a: sparse_engine.attention(*a, layout, block_size=4), q, k, v, w,
      jnp.ones((1, 8), bool))
  np.testing.assert_array_equal(out[:, 4:], 0.0)
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_attention_dropout_is_seeded_and_keeps_expectation():
  q, k, v, _, _, _ = inputs(16, False, False, batch=1)
  layout = layouts.local_layout(4, 1)

  @jax.jit
  @jax.vmap
  def drop(seed):
    return sparse_engine.attention(q, k, v, layout, block_size=4, dropout_rate=0.5,
                                 dropout_rng=jax.random.PRNGKey(seed))

  outs = drop(jnp.arange(400))
  # Same seed, same mask: equal up to float reassociation (XLA vectorises a batch of 400
  # and a batch of 1 differently); another mask would differ by O(1).
  np.testing.assert_allclose(outs[0], drop(jnp.arange(1))[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(outs[0], outs[1])
  mean = outs.mean(axis=0)
  np.testing.assert_allclose(mean, sparse_engine.attention(q, k, v, layout, block_size=4),
                             atol=0.25)


def test_layout_builders():
  np.testing.assert_array_equal(layouts.local_layout(4, 1),
                                [[0, 1, -1], [0, 1, 2], [1, 2, 3], [2, 3, -1]])
  np.testing.assert_array_equal(layouts.block_layout(3), [[0], [1], [2]])
  fixed = layouts.strided_layout(6, 3, 1, "fixed")  # groups {0,1,2} {3,4,5}; summaries 2, 5
  assert [set(r) - {-1} for r in fixed] == [{0, 1, 2, 5}] * 3 + [{2, 3, 4, 5}] * 3
  strided = layouts.strided_layout(6, 2, 1, "strided")
  assert set(strided[1]) - {-1} == {0, 1, 2, 3, 5}
  big = layouts.bigbird_layout(12, 4, 1, (0, 11), 2, 0)
  assert big.shape[0] == 4 and not big.flags.writeable
  for head in big:
    for i in range(1, 11):
      row = set(head[i]) - {-1}
      assert set(range(i - 1, i + 2)) - {0, 11} <= row and not row & {0, 11}
      assert len(row - set(range(i - 1, i + 2))) == 2  # random blocks outside the window
  assert not all(np.array_equal(big[0], head) for head in big[1:])  # heads differ
  np.testing.assert_array_equal(big, layouts.bigbird_layout.__wrapped__(12, 4, 1, (0, 11), 2, 0))
  assert not np.array_equal(big, layouts.bigbird_layout(12, 4, 1, (0, 11), 2, 1))
  _, tokens = sparse_variants.BigBirdAttention(C, block_size=4).layout(10, H)
  assert tokens == (0, 1, 2, 3, 8, 9)  # first and last (partial) block
  for window_tokens, blocks in ((0, 0), (4, 1), (5, 2)):  # ceil(w / block_size) blocks each side
    local = sparse_variants.LocalAttention(C, block_size=4, window_tokens=window_tokens)
    layout, _ = local.layout(32, H)
    np.testing.assert_array_equal(layout, layouts.local_layout(8, blocks))


@pytest.mark.parametrize("module, field", [
    (sparse_variants.LocalAttention(C, window=-1), "window"),
    (sparse_variants.LongformerAttention(C, window_tokens=-1), "window_tokens"),
    (sparse_variants.BlockAttention(C, block_size=0), "block_size"),
    (sparse_variants.StridedAttention(C, pattern="dilated"), "pattern"),
    (sparse_variants.BigBirdAttention(C, block_size=4, global_blocks=(9,)), "global_blocks"),
    (sparse_variants.LongformerAttention(C, global_tokens=(-1,)), "global_tokens"),
])
def test_bad_options_raise_config_error_naming_the_field(module, field):
  q = jnp.zeros((1, 16, H, D))
  with pytest.raises(ConfigError, match=f"model.attention.{field}="):
    module.attend(q, q, q, mask=None, segment_ids=None, deterministic=True)


@pytest.mark.parametrize("module, field", [
    (sparse_variants.LongformerAttention(C, block_size=4, window_tokens=3), "global_tokens"),
    (sparse_variants.BigBirdAttention(C, block_size=4), "global_blocks"),
])
def test_global_tokens_with_packed_rows_are_refused(module, field):
  """Global tokens are row positions: in a packed row only the first sequence would have its
  CLS global (packed != alone), so segment ids with global tokens are one line, not a silent
  difference; without global tokens the same layer runs packed rows."""
  q = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, H, D)), jnp.float32)
  segments = jnp.asarray([[1] * 9 + [2] * 7])
  with pytest.raises(ConfigError, match=f"model.attention.{field}=.*packed rows"):
    module.attend(q, q, q, mask=None, segment_ids=segments, deterministic=True)
  out = module.clone(**{field: ()}).attend(q, q, q, mask=None, segment_ids=segments,
                                           deterministic=True)
  assert out.shape == q.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ["local", "block", "strided", "bigbird", "longformer"])
def test_one_training_step_on_tiny_listops(tmp_path, name):
  from experiments.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests.test_train import tiny_listops  # pylint: disable=import-outside-toplevel
  config = tiny_listops(tmp_path / "cache", num_steps=2, eval_every=2, checkpoint_every=2)
  config.model.attention = {"name": name, "block_size": 8}
  config.model.position = {"name": "alibi" if name == "bigbird" else "learned"}
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert np.isfinite(metrics["loss"])
