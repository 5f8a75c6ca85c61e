"""Tests for experiments/data/pipeline.py: step-indexed batches, eval batches, process slices."""

import numpy as np
import pytest

from experiments.data.pipeline import StepBatches, eval_batches, process_slice

N = 10


def _arrays(n=N):
  """Example i has labels == i and inputs row [i, 100 + i], so a batch reveals its indices."""
  return {"inputs": np.stack([np.arange(n), 100 + np.arange(n)], axis=1).astype(np.int32),
          "labels": np.arange(n, dtype=np.int32)}


def _stream(batches, num_steps):
  """Example indices of steps 0..num_steps-1, concatenated, checked against the data."""
  out = []
  for step in range(num_steps):
    batch = batches[step]
    np.testing.assert_array_equal(batch["inputs"][:, 0], batch["labels"])
    np.testing.assert_array_equal(batch["inputs"][:, 1], 100 + batch["labels"])
    np.testing.assert_array_equal(batch["labels"], batches.indices(step))
    out.append(batch["labels"])
  return np.concatenate(out)


# ----------------------------------------------------------------------------
# StepBatches
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [2, 4, 10, 23])
def test_every_epoch_is_a_fresh_permutation_chained_without_gaps(batch_size):
  batches = StepBatches(_arrays(), batch_size=batch_size, seed=3)
  num_epochs = 6
  steps = -(-num_epochs * N // batch_size)
  stream = _stream(batches, steps)[: num_epochs * N]
  epochs = stream.reshape(num_epochs, N)
  for epoch in epochs:  # each epoch covers every example exactly once, nothing dropped
    np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
  orders = {tuple(epoch) for epoch in epochs}
  assert len(orders) == num_epochs  # reshuffled every epoch
  assert tuple(range(N)) not in orders  # actually shuffled


def test_batch_is_a_pure_function_of_seed_and_step():
  a = StepBatches(_arrays(), batch_size=4, seed=7)
  b = StepBatches(_arrays(), batch_size=4, seed=7)  # e.g. rebuilt after a restart
  for step in [0, 1, 2, 3, 17, 12_345, 10**9]:
    np.testing.assert_array_equal(a[step]["labels"], b[step]["labels"])
    np.testing.assert_array_equal(a[step]["labels"], a[step]["labels"])
  # Random access in any order equals sequential access.
  backwards = [a[s]["labels"] for s in reversed(range(8))][::-1]
  np.testing.assert_array_equal(np.concatenate(backwards), _stream(b, 8))


def test_seeds_give_unrelated_orders():
  streams = {seed: _stream(StepBatches(_arrays(), batch_size=5, seed=seed), 6)
             for seed in (0, 1, 2)}
  assert not np.array_equal(streams[0], streams[1])
  # grain seeds epoch e with (seed + e); the user seed is hashed first so that seed 1 does
  # not replay seed 0's order shifted by one epoch.
  assert not np.array_equal(streams[0][N : 2 * N], streams[1][:N])
  assert not np.array_equal(streams[1][N : 2 * N], streams[2][:N])


def test_no_shuffle_is_sequential():
  batches = StepBatches(_arrays(), batch_size=4, seed=0, shuffle=False)
  np.testing.assert_array_equal(_stream(batches, 5), np.arange(20) % N)


def test_step_batches_errors():
  with pytest.raises(ValueError, match="leading dimension"):
    StepBatches({"a": np.zeros(3), "b": np.zeros(4)}, batch_size=2, seed=0)
  with pytest.raises(ValueError, match="train.batch_size=0"):
    StepBatches(_arrays(), batch_size=0, seed=0)
  with pytest.raises(ValueError, match="seed=-1"):
    StepBatches(_arrays(), batch_size=2, seed=-1)
  with pytest.raises(IndexError):
    StepBatches(_arrays(), batch_size=2, seed=0)[-1]


# ----------------------------------------------------------------------------
# eval_batches
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, want_batches", [(4, 3), (5, 2), (16, 1)])
def test_eval_batches_cover_each_example_once(batch_size, want_batches):
  batches = list(eval_batches(_arrays(), batch_size))
  assert len(batches) == want_batches
  for batch in batches:
    assert set(batch) == {"inputs", "labels", "weights"}
    assert batch["inputs"].shape == (batch_size, 2) and batch["labels"].shape == (batch_size,)
    assert batch["weights"].dtype == np.float32 and batch["weights"].shape == (batch_size,)
  weights = np.concatenate([b["weights"] for b in batches])
  labels = np.concatenate([b["labels"] for b in batches])
  assert weights.sum() == N
  np.testing.assert_array_equal(labels[weights == 1], np.arange(N))  # fixed order
  assert (labels[weights == 0] == 0).all()  # zero padding
  np.testing.assert_array_equal(weights, np.arange(len(weights)) < N)  # padding only at the end


def test_eval_batches_errors():
  with pytest.raises(ValueError, match="weights"):
    next(eval_batches({"weights": np.ones(3)}, 2))
  with pytest.raises(ValueError, match="batch_size=0"):
    next(eval_batches(_arrays(), 0))


# ----------------------------------------------------------------------------
# process_slice
# ----------------------------------------------------------------------------
def test_process_slice():
  batch = StepBatches(_arrays(), batch_size=8, seed=0)[0]
  parts = [process_slice(batch, i, 4) for i in range(4)]
  assert all(p["inputs"].shape == (2, 2) and p["labels"].shape == (2,) for p in parts)
  for key in batch:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
  np.testing.assert_array_equal(process_slice(batch, 0, 1)["labels"], batch["labels"])
  with pytest.raises(ValueError, match="train.batch_size=8 is not divisible.*3"):
    process_slice(batch, 0, 3)
  with pytest.raises(ValueError, match="process_index=4"):
    process_slice(batch, 4, 4)
