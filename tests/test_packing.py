"""Sequence packing: placement, statistics, and packed == unpacked model outputs/gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from encoders.errors import ConfigError
from encoders.heads import pooling as heads
from encoders.heads.pooling import POOLINGS
from encoders.model import Model
from encoders.needs import model_needs
from experiments.data import packing
from experiments.tasks.classify import pack_classification
from tests.conftest import random_params, tiny_config


def random_examples(seed, n, low, high):
  rng = np.random.default_rng(seed)
  return [rng.integers(4, 37, size=int(k)).astype(np.int32) for k in rng.integers(low, high, n)]


@pytest.mark.parametrize("method", packing.METHODS)
def test_nothing_split_or_dropped_and_overlong_truncated(method):
  row_len, examples = 32, random_examples(0, 500, 1, 45)  # some longer than the row
  p = packing.pack(examples, row_len, method=method, max_segments=5)
  assert p.num_truncated == sum(len(e) > row_len for e in examples) > 0
  covered = np.zeros(p.inputs.shape, int)
  for i, e in enumerate(examples):
    r, o, n = p.row[i], p.offset[i], min(len(e), row_len)
    np.testing.assert_array_equal(p.inputs[r, o:o + n], e[:n])
    np.testing.assert_array_equal(p.positions[r, o:o + n], np.arange(n))
    seg = p.segment_ids[r, o]
    assert seg > 0 and (p.segment_ids[r, o:o + n] == seg).all()
    assert p.example_index[r, seg - 1] == i
    covered[r, o:o + n] += 1
  assert covered.max() == 1  # no two examples overlap
  assert ((covered == 0) == (p.segment_ids == 0)).all() and (p.inputs[covered == 0] == 0).all()
  assert p.segment_ids.max() <= 5 and (p.example_index >= 0).sum() == len(examples)
  kept = sum(min(len(e), row_len) for e in examples)
  assert p.padding_after == pytest.approx(1 - kept / p.inputs.size)
  assert p.padding_before == pytest.approx(1 - kept / (len(examples) * row_len))


@pytest.mark.parametrize("seed,low,high", [(1, 1, 64), (2, 20, 100), (3, 1, 20), (4, 50, 128)])
def test_best_fit_pads_no_more_than_first_fit(seed, low, high):
  examples = random_examples(seed, 2000, low, high)
  first = packing.pack(examples, 128, method="first_fit")
  best = packing.pack(examples, 128, method="best_fit")
  assert best.padding_after <= first.padding_after < first.padding_before


def test_packing_100k_examples_is_fast():
  import time  # pylint: disable=import-outside-toplevel
  lengths = np.random.default_rng(0).integers(1, 512, 100_000)
  for method in packing.METHODS:
    start = time.perf_counter()
    row, offset = packing.assign_rows(lengths, 512, method, max_segments=16)
    assert time.perf_counter() - start < 20  # O(n log n); ~1 s on an idle core
    assert np.bincount(row, weights=lengths).max() <= 512


def check_model_supports(model, max_segments):
  segments = model_needs(model).segments
  packing.check_segments(max_segments, segments.supported, segments.limit, segments.by)


def test_bad_options_are_one_line_errors():
  with pytest.raises(ConfigError, match="data.packing.method"):
    packing.pack([np.ones(3, np.int32)], 8, method="next_fit")
  options = ml_collections.ConfigDict(dict(enabled=True, method="best_fit", max_segments=0))
  with pytest.raises(ConfigError, match="max_segments"):
    pack_classification({"inputs": np.ones((2, 4), np.int32), "labels": np.zeros(2)}, options)
  for name in ("linformer", "nystrom"):
    with pytest.raises(ConfigError, match="cannot keep packed segments apart"):
      check_model_supports(tiny_config(attention=dict(name=name)), 16)
  with pytest.raises(ConfigError, match="max_segments"):
    check_model_supports(tiny_config(attention=dict(name="linear", max_segments=4)), 8)


def test_classification_packing_keeps_labels_per_segment():
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 12, 40)
  inputs = np.zeros((40, 12), np.int32)
  for i, n in enumerate(lengths):
    inputs[i, :n] = rng.integers(4, 20, n)
  labels = rng.integers(0, 5, 40)
  options = ml_collections.ConfigDict(dict(enabled=True, method="best_fit", max_segments=4))
  packed, stats = pack_classification({"inputs": inputs, "labels": labels}, options)
  assert stats["padding_fraction"] < stats["padding_fraction_before_packing"]
  assert packed["label_weights"].sum() == 40
  seen = sorted(zip(packed["labels"][packed["label_weights"] > 0].tolist()))
  assert seen == sorted(zip(labels.tolist()))


# ---------------------------------------------------------------------------------------------
# Packed vs unpacked: same per-example losses and gradients (dense and block-sparse attention)

ROW, SHORT = 32, 9


def layouts(examples):
  unpacked = {"tokens": np.zeros((len(examples), ROW), np.int32)}
  for i, e in enumerate(examples):
    unpacked["tokens"][i, :len(e)] = e
  unpacked["mask"] = unpacked["tokens"] != 0
  p = packing.pack(examples, ROW, method="best_fit", max_segments=8)
  packed = {"tokens": p.inputs, "mask": p.inputs != 0, "segment_ids": p.segment_ids,
            "positions": p.positions}
  return unpacked, packed, p


def token_locations(examples, p):
  """(rows, columns) of all tokens, example by example, unpacked and packed; example ids."""
  lengths = [len(e) for e in examples]
  within = np.concatenate([np.arange(n) for n in lengths])
  ids = np.repeat(np.arange(len(examples)), lengths)
  return (ids, within), (p.row[ids], p.offset[ids] + within), ids


@pytest.mark.parametrize("attention", [
    dict(name="dense"), dict(name="local", block_size=4, window_tokens=3),
    dict(name="longformer", block_size=4, window_tokens=2, global_tokens=())], ids=str)
def test_packed_equals_unpacked_losses_and_gradients(attention):
  """Token-level windows (shorter than the examples, 4-token blocks: packed examples straddle
  block boundaries at various offsets) are exact under packing, as dense attention is."""
  examples = random_examples(5, 6, 2, SHORT + 1)
  for e in examples:
    e[0] = 1  # CLS first, as the tasks do
  unpacked, packed, p = layouts(examples)
  config = tiny_config(max_length=ROW, num_layers=1, attention=attention)
  model = Model(config)
  params = random_params(model, packed)
  loc_unpacked, loc_packed, ids = token_locations(examples, p)
  targets = np.random.default_rng(1).integers(4, 37, len(ids))
  # Gradient of a random combination of the per-example losses: any difference in an example's
  # gradient, or any leak between examples, changes it.
  weights = jnp.asarray(np.random.default_rng(7).uniform(0.5, 2.0, len(examples)))

  def combined(params, inputs, rows, cols):
    logits, _ = model.apply({"params": params}, inputs)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[rows, cols], targets)
    losses = jax.ops.segment_sum(ce, ids, num_segments=len(examples))
    return losses @ weights, losses

  grad_fn = jax.jit(jax.value_and_grad(combined, has_aux=True))
  (_, lu), gu = grad_fn(params, unpacked, *loc_unpacked)
  (_, lp), gp = grad_fn(params, packed, *loc_packed)
  np.testing.assert_allclose(lp, lu, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), gp, gu)


def test_per_segment_classification_head_equals_unpacked_rows():
  examples = random_examples(6, 9, 2, SHORT + 1)
  for e in examples:
    e[0] = 1
  unpacked, packed, p = layouts(examples)
  config = tiny_config(max_length=ROW, num_layers=1, head=dict(
      name="classification", num_classes=3, pooling="mean", max_segments=8))
  model = Model(config)
  params = random_params(model, unpacked, seed=1)
  apply = jax.jit(model.apply)
  whole, _ = apply({"params": params}, unpacked)  # no segment_ids: one output per row
  per_segment, _ = apply({"params": params}, packed)
  assert per_segment.shape == (len(p.inputs), 8, 3)
  for i in range(len(examples)):
    seg = p.segment_ids[p.row[i], p.offset[i]]
    np.testing.assert_allclose(per_segment[p.row[i], seg - 1], whole[i], rtol=1e-5, atol=1e-5)


def test_pool_segments_equals_pooling_each_example():
  examples = random_examples(8, 9, 2, SHORT + 1)
  unpacked, packed, p = layouts(examples)
  rng = np.random.default_rng(0)
  hidden_rows = [rng.normal(size=(len(e), 4)) for e in examples]
  packed_hidden = np.zeros(p.inputs.shape + (4,))
  for i, h in enumerate(hidden_rows):
    packed_hidden[p.row[i], p.offset[i]:p.offset[i] + len(h)] = h
  for how in POOLINGS:
    pooled = heads.pool_segments(jnp.asarray(packed_hidden), jnp.asarray(packed["mask"]),
                                 jnp.asarray(packed["segment_ids"]), 8, how)
    for i, h in enumerate(hidden_rows):
      seg = p.segment_ids[p.row[i], p.offset[i]]
      want = h[0] if how == "cls" else h.mean(0)
      np.testing.assert_allclose(pooled[p.row[i], seg - 1], want, rtol=1e-6, atol=1e-6)
    empty = p.example_index < 0
    if how == "mean":
      assert (np.asarray(pooled)[empty] == 0).all()  # absent segments pool to zeros
