"""Pair classification with two towers: LRA's byte-level document matching (Tay et al. 2021) on
the AAN citation pairs (experiments/data/aan.py).

Rows hold both documents side by side (`inputs` [batch, 2 * length]); `prepare` stacks them
into one encoder batch [2 * batch, length] (first documents, then second ones), so the shared
encoder is both towers, and the `pair_classification` head (encoders/heads/pair.py) classifies
[u, v, u * v, u - v] of the pooled pair. Metrics: cross-entropy loss and accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments.data import aan, pipeline, tokenizers
from experiments.tasks.base import Task, pad_mask, weighted_cross_entropy


def split_pairs(rows):
  """[batch, 2 * length] -> [2 * batch, length]: first documents, then second ones."""
  half = rows.shape[1] // 2
  return jnp.concatenate([rows[:, :half], rows[:, half:]], axis=0)


class MatchTask(Task):
  """Two-tower pair classification over `config.data.source = "aan"`."""

  def __init__(self, config):
    d = config.data
    if d.source != "aan":
      raise ConfigError(f"data.source={d.source!r}: the match task reads 'aan'")
    if d.packing.enabled:
      raise ConfigError("data.packing.enabled: the match task does not pack pairs")
    self.length = d.aan.max_length
    self.train = self._load(d.aan, "train", d.aan.max_train)
    self.eval = self._load(d.aan, "validation", d.aan.max_eval)
    self.num_classes = aan.NUM_CLASSES
    super().__init__(config)

  def _load(self, options, split: str, cap: int):
    return aan.load_aan(options.dir, split, max_length=self.length, max_examples=cap or None,
                        cls=bool(options.cls))

  def test_batches(self):
    a = self.config.data.aan
    return pipeline.eval_batches(self._load(a, "test", a.max_eval), self.config.eval.batch_size)

  def example_inputs(self, length: int):
    del length
    return {"tokens": jnp.zeros((2, self.length), jnp.int32),
            "mask": jnp.ones((2, self.length), jnp.bool_)}

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or tokenizers.ByteTokenizer().vocab_size
    model["max_length"] = model.get("max_length") or self.length
    head = dict(model.get("head") or {"name": "pair_classification"})
    if head.get("name") != "pair_classification":
      raise ConfigError(f"model.head.name={head.get('name')!r}; the match task trains the "
                        "'pair_classification' head")
    head["num_classes"] = head.get("num_classes") or self.num_classes
    model["head"] = head
    return self.checked_model_config(model)

  def prepare(self, batch, rng, train):
    del rng, train
    tokens = split_pairs(batch["inputs"])
    weights = batch.get("weights")
    if weights is None:
      weights = jnp.ones(batch["inputs"].shape[:1], jnp.float32)
    return ({"tokens": tokens, "mask": pad_mask(tokens)},
            {"labels": batch["labels"], "weights": weights})

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])
