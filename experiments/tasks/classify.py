"""Sequence classification: generated ListOps (Tay et al. 2021) or any TFDS text dataset.

Batches hold `inputs` [batch, length] (CLS first, PAD=0 after the text) and `labels` [batch].
With `data.packing.enabled` (Krell et al. 2021) examples share rows: `segment_ids`,
`positions`, and per-segment `labels`/`label_weights` [rows, max_segments]; the head pools each
segment (`model.head.max_segments`) and every example still counts once. Metrics:
cross-entropy loss and accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments.data import listops, packing
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
    self.packing_info: dict[str, float] = {}
    if d.packing.enabled:
      self.train, stats = pack_classification(self.train, d.packing)
      self.eval, _ = pack_classification(self.eval, d.packing)
      self.packing_info = {f"data/{k}": v for k, v in stats.items()}
    super().__init__(config)

  def data_info(self) -> dict[str, float]:
    return {**super().data_info(), **self.packing_info}

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.vocab_size
    model["max_length"] = model.get("max_length") or self.train["inputs"].shape[1]
    head = dict(model.get("head") or {"name": "classification"})
    if head.get("name", "classification") == "classification" and not head.get("num_classes"):
      head["num_classes"] = self.num_classes
    packed = self.config.data.packing.enabled
    if packed:
      head["max_segments"] = self.config.data.packing.max_segments
    model["head"] = head
    config = self.checked_model_config(model)
    if packed:
      packing.check_model_supports(config, self.config.data.packing.max_segments)
    return config

  def prepare(self, batch, rng, train):
    del rng, train
    tokens = batch["inputs"]
    weights = batch.get("weights")
    if weights is None:
      weights = jnp.ones(tokens.shape[:1], jnp.float32)
    inputs = {"tokens": tokens, "mask": pad_mask(tokens)}
    if "segment_ids" in batch:
      inputs.update(segment_ids=batch["segment_ids"], positions=batch["positions"])
      weights = batch["label_weights"] * weights[:, None]
    return inputs, {"labels": batch["labels"], "weights": weights}

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])


def pack_classification(arrays, options) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Packs padded examples (`inputs` [N, length], `labels` [N]) into rows of the same length
  with per-segment labels [rows, max_segments] and 0/1 `label_weights`."""
  if not options.max_segments:
    raise ConfigError("data.packing.max_segments=0; classification packing needs a positive "
                      "cap (the head has one output per segment)")
  packed = packing.pack(packing.unpadded_examples(arrays["inputs"]), arrays["inputs"].shape[1],
                        method=options.method, max_segments=options.max_segments)
  index = packed.example_index
  labels = np.where(index >= 0, arrays["labels"][np.maximum(index, 0)], 0).astype(np.int32)
  return ({"inputs": packed.inputs, "segment_ids": packed.segment_ids,
           "positions": packed.positions, "labels": labels,
           "label_weights": (index >= 0).astype(np.float32)}, packed.stats())
