"""Sequence classification: generated ListOps (Tay et al. 2021) or any TFDS text dataset.

Batches hold `inputs` [batch, length] (CLS first, PAD=0 after the text) and `labels` [batch].
Metrics: cross-entropy loss and accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments.data import listops
from experiments.tasks.base import (
    Task,
    pad_mask,
    weighted_cross_entropy,
)

SOURCES = ("listops", "tfds")


class ClassifyTask(Task):
  """Classification with a pooled head; data from `config.data.source`."""

  def __init__(self, config):
    d = config.data
    if d.source == "listops":
      kwargs = dict(num_train=d.listops.num_train, num_eval=d.listops.num_eval,
                    seed=d.listops.seed, min_length=d.listops.min_length,
                    max_length=d.listops.max_length, max_depth=d.listops.max_depth,
                    max_args=d.listops.max_args, cache_dir=d.cache_dir)
      self.train = listops.load_listops("train", **kwargs)
      self.eval = listops.load_listops(d.eval_split, **kwargs)
      self.vocab_size, self.num_classes = listops.VOCAB_SIZE, listops.NUM_CLASSES
    elif d.source == "tfds":
      from experiments.data import tfds_text  # pylint: disable=import-outside-toplevel
      kwargs = dict(text_key=d.tfds.text_key, label_key=d.tfds.label_key,
                    max_length=d.tfds.max_length, data_dir=d.tfds.data_dir)
      self.train = tfds_text.load_tfds_classification(
          d.tfds.name, split=d.tfds.train_split, max_examples=d.tfds.max_train or None, **kwargs)
      self.eval = tfds_text.load_tfds_classification(
          d.tfds.name, split=d.tfds.eval_split, max_examples=d.tfds.max_eval or None, **kwargs)
      self.vocab_size = tfds_text.ByteTokenizer().vocab_size
      self.num_classes = int(max(self.train["labels"].max(), self.eval["labels"].max())) + 1
    else:
      raise ConfigError(f"data.source={d.source!r} is not a classification source; "
                       f"allowed: {', '.join(SOURCES)}")
    super().__init__(config)

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.vocab_size
    model["max_length"] = model.get("max_length") or self.train["inputs"].shape[1]
    head = dict(model.get("head") or {"name": "classification"})
    if head.get("name", "classification") == "classification" and not head.get("num_classes"):
      head["num_classes"] = self.num_classes
    model["head"] = head
    return self.checked_model_config(model)

  def prepare(self, batch, rng, train):
    del rng, train
    tokens = batch["inputs"]
    weights = batch.get("weights")
    if weights is None:
      weights = jnp.ones(tokens.shape[:1], jnp.float32)
    return ({"tokens": tokens, "mask": pad_mask(tokens)},
            {"labels": batch["labels"], "weights": weights})

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])
