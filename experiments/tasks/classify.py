"""Sequence classification: ListOps, Pathfinder / Path-X and CIFAR-10 pixels (the LRA tasks,
Tay et al. 2021; generated or LRA's released files) or any TFDS text dataset (LRA's text task:
IMDB bytes).

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
from encoders.needs import model_needs
from experiments.data import listops, packing, pathfinder, pathfinder_lra, pipeline, tokenizers
from experiments.tasks.base import (
    Task,
    pad_mask,
    weighted_cross_entropy,
)

SOURCES = ("listops", "tfds", "pathfinder", "image")
PIXEL_SOURCES = ("pathfinder", "image")  # uint8 pixels; token = value + NUM_SPECIAL


def load_split(config, split: str) -> dict[str, np.ndarray]:
  """`split` ("train", "eval" = the configured evaluation split, "test") of
  `config.data.source`: {"inputs", "labels"}."""
  d = config.data
  if d.source == "listops":
    which = {"train": "train", "eval": d.eval_split, "test": "test"}[split]
    if d.listops.lra_dir:
      return listops.load_lra_listops(d.listops.lra_dir, which,
                                      max_length=d.listops.max_length)
    return listops.load_listops(
        which, num_train=d.listops.num_train, num_eval=d.listops.num_eval,
        seed=d.listops.seed, min_length=d.listops.min_length, max_length=d.listops.max_length,
        max_depth=d.listops.max_depth, max_args=d.listops.max_args, cache_dir=d.cache_dir)
  if d.source == "pathfinder":
    which = {"train": "train", "eval": d.eval_split, "test": "test"}[split]
    p = dict(d.pathfinder)
    if p.pop("lra_dir"):
      return pathfinder_lra.load_lra_pathfinder(d.pathfinder.lra_dir, which, cache_dir=d.cache_dir)
    return pathfinder.load_pathfinder(which, cache_dir=d.cache_dir, **p)
  if d.source == "tfds":
    from experiments.data import tfds_text  # pylint: disable=import-outside-toplevel
    name = {"train": d.tfds.train_split, "eval": d.tfds.eval_split, "test": d.tfds.test_split}
    cap = {"train": d.tfds.max_train, "eval": d.tfds.max_eval, "test": d.tfds.max_eval}
    return tfds_text.load_tfds_classification(
        d.tfds.name, split=name[split], max_examples=cap[split] or None,
        text_key=d.tfds.text_key, label_key=d.tfds.label_key, max_length=d.tfds.max_length,
        data_dir=d.tfds.data_dir)
  if d.source == "image":
    from experiments.data import tfds_image  # pylint: disable=import-outside-toplevel
    name = {"train": d.image.train_split, "eval": d.image.eval_split,
            "test": d.image.test_split}
    return tfds_image.load_tfds_images(d.image.name, split=name[split],
                                       data_dir=d.image.data_dir)
  raise ConfigError(f"data.source={d.source!r} is not a classification source; "
                    f"allowed: {', '.join(SOURCES)}")


class ClassifyTask(Task):
  """Classification with a pooled head; data from `config.data.source`: generated or LRA's
  ListOps (tokens), any TFDS text set (bytes), generated or LRA's Pathfinder and TFDS images
  (pixel tokens: value + 4, no CLS; pool with `mean`; with `data.pixel_zero_is_padding` pixel
  value 0 is padding, as LRA's mask)."""

  def __init__(self, config):
    d = config.data
    self.train, self.eval = load_split(config, "train"), load_split(config, "eval")
    if d.source == "listops":
      self.vocab_size, self.num_classes = listops.VOCAB_SIZE, listops.NUM_CLASSES
    elif d.source in PIXEL_SOURCES:
      self.token_offset = tokenizers.NUM_SPECIAL
      self.zero_is_padding = bool(d.pixel_zero_is_padding)
      self.vocab_size = tokenizers.ByteTokenizer().vocab_size
    else:
      self.vocab_size = tokenizers.ByteTokenizer().vocab_size
    if d.source != "listops":
      self.num_classes = int(max(self.train["labels"].max(), self.eval["labels"].max())) + 1
    self.packing_info: dict[str, float] = {}
    if d.packing.enabled:
      if self.token_offset:
        raise ConfigError(f"data.packing.enabled with data.source={d.source!r}: pixel rows "
                          "have no padding to pack")
      self.train, stats = pack_classification(self.train, d.packing)
      self.eval, _ = pack_classification(self.eval, d.packing)
      self.packing_info = {f"data/{k}": v for k, v in stats.items()}
    super().__init__(config)

  def test_batches(self):
    if self.config.data.packing.enabled:
      raise ConfigError("eval.select_best with data.packing.enabled: the test split is not "
                        "packed; evaluate without packing")
    test = load_split(self.config, "test")
    return map(self.tokens, pipeline.eval_batches(test, self.config.eval.batch_size))

  def data_info(self) -> dict[str, float]:
    return {**super().data_info(), **self.packing_info}

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.vocab_size
    model["max_length"] = model.get("max_length") or self.train["inputs"].shape[1]
    head = dict(model.get("head") or {"name": "classification"})
    if (head.get("name", "classification") in ("classification", "lra_classification")
        and not head.get("num_classes")):
      head["num_classes"] = self.num_classes
    packed = self.config.data.packing.enabled
    if packed:
      head["max_segments"] = self.config.data.packing.max_segments
    model["head"] = head
    config = self.checked_model_config(model)
    if packed:
      segments = model_needs(config).segments
      packing.check_segments(self.config.data.packing.max_segments, segments.supported,
                             segments.limit, segments.by)
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
