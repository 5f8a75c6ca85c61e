"""What a task is: data + head + loss + metrics.

A task object owns its host-side data (numpy) and exposes pure JAX functions used inside the
jitted steps:

- `train_batch(step)`: the global training batch for `step` (a pure function of seed and step,
  so a resumed run continues the data stream exactly);
- `eval_batches()`: fixed evaluation batches, each with a float `weights` [batch] key;
- `model_config(model)`: fills data-dependent model fields (vocab size, length, classes);
- `prepare(batch, rng, train)`: device-side transform into model inputs and targets (e.g. MLM
  masking); must be pure;
- `metrics(outputs, targets)`: dict of name -> (sum, count) so that evaluation over many
  batches and devices aggregates exactly; `loss` is the training objective;
- `build_model(model_config)`: the Flax module the runner trains (default `Model`; ELECTRA
  returns its generator + discriminator composite);
- `data_info()`: figures about the data pipeline for the run's info record (padding fraction,
  packing statistics).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments.data import pipeline

Batch = Mapping[str, np.ndarray]
Metrics = dict[str, tuple[jax.Array, jax.Array]]


class Task(abc.ABC):
  """Base class of the runner's tasks (see module docstring).

  Subclasses load their examples into `self.train` and `self.eval` (dicts of arrays with an
  `inputs` key) and call `super().__init__` afterwards; batching is shared. With
  `token_offset` > 0 the stored `inputs` are small values (uint8 pixels) and a batch's
  tokens are `inputs + token_offset` (int32), made per batch so the split stays uint8; with
  `zero_is_padding` an input 0 becomes token 0 (padding), as LRA's `inputs > 0` mask on pixels.
  """
  train: dict[str, np.ndarray]
  eval: dict[str, np.ndarray]
  token_offset = 0
  zero_is_padding = False

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.batches = pipeline.StepBatches(self.train, config.train.batch_size,
                                        seed=config.data.shuffle_seed)

  def build_model(self, model_config: ModelConfig) -> nn.Module:
    """The module trained on this task; applied as `module.apply(vars, inputs, deterministic=)`
    -> (outputs, aux)."""
    return Model(model_config)

  def data_info(self) -> dict[str, float]:
    """Padding fraction of the training rows (packing tasks add before/after figures)."""
    if "inputs" not in self.train:
      return {}
    padding = self.train["inputs"] == 0
    if self.token_offset and not self.zero_is_padding:
      padding = np.zeros_like(padding)
    return {"data/padding_fraction": float(np.mean(padding))}

  def tokens(self, batch: Batch) -> Batch:
    """`batch` with `inputs` as int32 tokens (adds `token_offset`)."""
    if not self.token_offset:
      return batch
    inputs = batch["inputs"].astype(np.int32)
    tokens = inputs + self.token_offset
    if self.zero_is_padding:
      tokens = np.where(inputs == 0, 0, tokens)
    return {**batch, "inputs": tokens}

  def train_batch(self, step: int) -> Batch:
    """Global batch of host arrays for one training step."""
    return self.tokens(self.batches[step])

  def eval_batches(self) -> Iterator[Batch]:
    """Fixed evaluation batches with a `weights` key (0 for padding examples)."""
    return map(self.tokens, pipeline.eval_batches(self.eval, self.config.eval.batch_size))

  def test_batches(self) -> Iterator[Batch] | None:
    """Batches of the task's test split, for `eval.select_best`; None = no test split."""
    return None

  def example_inputs(self, length: int) -> dict[str, jax.Array]:
    """Model inputs of the right shapes to initialise the parameters (rows of `length`)."""
    return {"tokens": jnp.zeros((1, length), jnp.int32),
            "mask": jnp.ones((1, length), jnp.bool_)}

  def checked_model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig.from_dict after checking every token id fits the vocabulary."""
    for split, arrays in (("train", self.train), ("eval", self.eval)):
      check_token_range(arrays["inputs"], model["vocab_size"],
                        f"data.source={self.config.data.source!r} ({split})", self.token_offset)
    return ModelConfig.from_dict(model)

  @abc.abstractmethod
  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    """The ModelConfig for this task's data, from the `config.model` sub-dict."""

  @abc.abstractmethod
  def prepare(self, batch: Mapping[str, jax.Array], rng: jax.Array,
              train: bool) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """(model inputs, targets) from a device batch; pure."""

  @abc.abstractmethod
  def metrics(self, outputs: jax.Array, targets: Mapping[str, jax.Array]) -> Metrics:
    """name -> (sum, count); must contain `loss`. A sum may be an array (e.g. a histogram),
    added elementwise over batches; `summarize` must turn it into scalars."""

  def summarize(self, totals: Mapping[str, float]) -> dict[str, float]:
    """Derived metrics from aggregated means (e.g. perplexity), for train and eval records;
    default: none."""
    return dict(totals)

  def corpus_metrics(self, model: nn.Module, params) -> dict[str, float]:
    """Metrics that need the whole eval split at once (e.g. retrieval over a corpus), added
    to every evaluation; default: none."""
    del model, params
    return {}

  def initial_params(self, params):
    """The parameters a fresh run starts from, given its random init (host or device arrays
    of the same structure); default: unchanged. E.g. the embed task seeds its student's
    embeddings from its teacher's."""
    return params


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array,
                           weights: jax.Array) -> Metrics:
  """Loss and accuracy sums over positions with weight > 0 (float32).

  Correct = the label's logit is the largest (an exact tie counts as correct): one max
  reduction, which XLA:CPU vectorises, where argmax's variadic reduction took ~0.5 s of a
  3.3 s BERT-sized MLM step over a 30K vocabulary (docs/benchmarks.md).
  """
  logits = logits.astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  correct = (label_logits >= logits.max(-1)).astype(jnp.float32)
  count = weights.sum()
  return {"loss": ((losses * weights).sum(), count),
          "accuracy": ((correct * weights).sum(), count)}


def check_token_range(inputs: np.ndarray, vocab_size: int, what: str, offset: int = 0) -> None:
  """One-line error if any token id (`inputs + offset`) falls outside [0, vocab_size)."""
  low, high = int(inputs.min()) + offset, int(inputs.max()) + offset
  if low < 0 or high >= vocab_size:
    bad = low if low < 0 else high
    raise ConfigError(f"{what}: token id {bad} is outside the vocabulary [0, {vocab_size}) "
                      "(model.vocab_size too small, or data from another tokenizer)")


def pad_mask(tokens: jax.Array, pad_id: int = 0) -> jax.Array:
  return tokens != pad_id
