"""Deterministic, step-indexed batching: batch `step` is a pure function of (seed, step).

A resumed run asks for batch `step` and gets exactly the batch the uninterrupted run saw, with
no iterator state to checkpoint. The order comes from grain's random-access `MapDataset`:

    MapDataset.range(N).shuffle(seed).repeat().batch(B)

`shuffle` draws an independent permutation per epoch (grain seeds epoch e with seed + e) and
`repeat` chains the epochs into one infinite stream, still random access. Only indices flow
through grain; the arrays are gathered with numpy. A step costs about B * (6 us + 17 ms / N)
on CPU (grain's index_shuffle is slow on tiny domains): ~6 ms for B=1024 on N=25k, ~2 ms for
B=256 on N=15k, but also ~6 ms for B=4 on N=10, so toy datasets want toy batch sizes.

Epoch boundaries: the stream is cut into batches *without* regard to epochs (no
drop_remainder): when B does not divide N, one batch holds the last examples of epoch e and the
first of epoch e + 1. Every example is seen exactly once per epoch and nothing is dropped; a
batch may (rarely, and always when B > N) contain the same example twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from encoders.errors import ConfigError


def _num_examples(arrays: Mapping[str, np.ndarray]) -> int:
  """The common leading dimension of `arrays` (error if empty or mismatched)."""
  lengths = {key: np.shape(value)[0] for key, value in arrays.items()}
  if not lengths:
    raise ConfigError("data: no arrays given")
  if len(set(lengths.values())) != 1:
    raise ConfigError(f"data: arrays differ in leading dimension: {lengths}")
  return next(iter(lengths.values()))


def _grain_seed(seed: int) -> int:
  """Maps a user seed to grain's 32-bit shuffle seed.

  grain seeds epoch e with (seed + e), so raw seeds s and s + 1 would see the same orders one
  epoch apart; hashing the seed first makes the runs of a seed study independent.
  """
  if seed < 0:
    raise ConfigError(f"seed={seed}; must be >= 0")
  return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


class StepBatches:
  """Random-access global batches: `batches[step] -> {key: array [batch_size, ...]}`.

  Example: `StepBatches({"inputs": x, "labels": y}, batch_size=32, seed=0)[step]`.
  With `shuffle=False` the order is 0..N-1 repeated. See the module docstring for how epochs
  are chained.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int,
               shuffle: bool = True):
    """Args: arrays with a common leading dim N; global `batch_size`; `seed` (>= 0)."""
    self.num_examples = _num_examples(arrays)
    if self.num_examples == 0:
      raise ConfigError("data: arrays have no examples")
    if batch_size <= 0:
      raise ConfigError(f"train.batch_size={batch_size}; must be positive")
    self.batch_size = batch_size
    self._arrays = {key: np.asarray(value) for key, value in arrays.items()}
    import grain  # pylint: disable=import-outside-toplevel  (2 s to import; benches need none)

    indices = grain.MapDataset.range(self.num_examples)
    if shuffle:
      indices = indices.shuffle(seed=_grain_seed(seed))
    self._indices = indices.repeat().batch(batch_size)

  def indices(self, step: int) -> np.ndarray:
    """Example indices of batch `step`: positions [step * B, (step + 1) * B) of the stream."""
    if step < 0:
      raise IndexError(f"step={step}; must be >= 0")
    return np.asarray(self._indices[step])

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    """The global batch for training step `step`."""
    idx = self.indices(step)
    return {key: value[idx] for key, value in self._arrays.items()}


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-order batches covering every example exactly once.

  Every batch has exactly `batch_size` rows and a float32 "weights" [batch_size] key: 1.0 for
  real examples, 0.0 for the zero-filled padding that completes the last batch. Metrics must
  be weighted by it.
  """
  num = _num_examples(arrays)
  if batch_size <= 0:
    raise ConfigError(f"eval_batches: batch_size={batch_size}; must be positive")
  if "weights" in arrays:
    raise ConfigError("data: eval arrays already have a 'weights' key; eval_batches adds it")
  for start in range(0, num, batch_size):
    real = min(batch_size, num - start)
    batch = {}
    for key, value in arrays.items():
      chunk = np.asarray(value[start : start + real])
      if real < batch_size:
        padding = np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, padding])
      batch[key] = chunk
    batch["weights"] = (np.arange(batch_size) < real).astype(np.float32)
    yield batch


def process_slice(batch: Mapping[str, np.ndarray], process_index: int, process_count: int
                  ) -> dict[str, np.ndarray]:
  """This process's contiguous share of a global batch (leading dim split evenly)."""
  batch_size = _num_examples(batch)
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} not in [0, {process_count})")
  if batch_size % process_count:
    raise ConfigError(f"train.batch_size={batch_size} is not divisible by the process count "
                     f"{process_count}")
  per = batch_size // process_count
  return {key: value[process_index * per : (process_index + 1) * per]
          for key, value in batch.items()}
