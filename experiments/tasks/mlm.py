"""Masked language modelling on a local text corpus (BERT, Devlin et al. 2019), or on the
inputs of a classification task's own data (self-pretraining, `TaskInputs`).

Data: `config.data.text` documents (default: the Python standard library's sources), tokenized
with bytes or a WordPiece vocabulary trained on the corpus (`data.text.tokenizer`). With
`data.packing.enabled` (Krell et al. 2021) every document is cut into pieces of at most
seq_len - 1 tokens, each gets its own CLS, and the pieces are packed into rows with
`segment_ids`/`positions`, so no token attends across documents; without packing the documents
are joined by SEP into one stream cut into full rows (no padding, but cross-document context).

Masking (experiments/tasks/masking.py): dynamic (RoBERTa, Liu et al. 2019), drawn on device from
the step's RNG, so masks are a pure function of (seed, step); `mlm.masking` = token |
whole_word | span (SpanBERT, Joshi et al. 2020); rate and the 80/10/10 split configurable; an
exactly-k budget so that, with `mlm.predict_only_masked`, the head evaluates only a static
P = round(mask_rate * seq_len) gathered positions per row (same loss, a fraction of the
vocabulary-projection FLOPs). Metrics: loss, masked-token accuracy, perplexity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.needs import model_needs
from experiments.data import listops, packing, text_corpus, tokenizers
from experiments.tasks import masking
from experiments.tasks.base import Task, pad_mask, weighted_cross_entropy


class TextData:
  """Tokenizer and packed (or streamed) train/eval rows of `config.data.text`."""

  def __init__(self, config):
    d = config.data
    if d.source != "text":
      raise ConfigError(f"data.source={d.source!r}: the {config.task} task reads 'text'")
    self.seq_len = d.text.seq_len
    if self.seq_len < 2:
      raise ConfigError(f"data.text.seq_len={self.seq_len}; must be >= 2 (CLS + a token)")
    texts = text_corpus.read_documents(d.text.dir or None, pattern=d.text.pattern,
                                       eval_fraction=d.text.eval_fraction,
                                       max_bytes=d.text.max_bytes)
    self.tokenizer = tokenizers.make_tokenizer(
        d.text.tokenizer, vocab_size=d.text.vocab_size, train_texts=texts["train"],
        cache_dir=d.cache_dir, corpus_key=text_corpus.corpus_key(texts))
    self.packed = bool(d.packing.enabled)
    self.info: dict[str, float] = {}
    self.splits = {}
    for split in ("train", "eval"):
      docs = [doc for doc in tokenizers.encode_all(self.tokenizer, texts[split]) if len(doc)]
      if self.packed:
        self.splits[split] = self._packed(docs, d.packing, split)
      else:
        self.splits[split] = {"inputs": self._chunked(docs)}
    if d.text.max_eval_examples:
      self.splits["eval"] = {k: v[:d.text.max_eval_examples]
                             for k, v in self.splits["eval"].items()}

  def _packed(self, docs, options, split) -> dict[str, np.ndarray]:
    cls = np.array([self.tokenizer.CLS_ID], np.int32)
    pieces = [np.concatenate([cls, p]) for p in packing.split_documents(docs, self.seq_len - 1)]
    packed = packing.pack(pieces, self.seq_len, method=options.method,
                          max_segments=options.max_segments, pad_id=self.tokenizer.PAD_ID)
    if split == "train":
      self.info = {f"data/{k}": v for k, v in packed.stats().items()}
    return {"inputs": packed.inputs, "segment_ids": packed.segment_ids,
            "positions": packed.positions}

  def _chunked(self, docs) -> np.ndarray:
    sep = np.array([self.tokenizer.SEP_ID], np.int32)
    joined = [sep] * (2 * len(docs) - 1)
    joined[::2] = docs
    chunks = text_corpus.chunk_stream(np.concatenate(joined), self.seq_len - 1)
    cls = np.full((len(chunks), 1), self.tokenizer.CLS_ID, np.int32)
    return np.concatenate([cls, chunks], axis=1)


@dataclasses.dataclass(frozen=True)
class ListOpsMasking:
  """ListOps' vocabulary (experiments/data/listops.py) plus a [MASK] id after it, for MLM on
  ListOps inputs; PAD and CLS are its specials. A random replacement may draw [MASK] (1 in 16
  of the 10% random ones)."""
  PAD_ID = listops.PAD_ID
  CLS_ID = listops.CLS_ID
  MASK_ID = listops.VOCAB_SIZE
  num_special = 2
  vocab_size = listops.VOCAB_SIZE + 1

  def word_starts(self, tokens):
    return jnp.ones(tokens.shape, bool)


class TaskInputs:
  """The inputs of a classification source's own training data (labels dropped), for MLM
  self-pretraining (Amos et al. 2024, "Never Train from Scratch": pretraining on the task's
  own inputs, then fine-tuning with `init_from`, closes most of the gap between architectures
  on LRA). ListOps tokens get a [MASK] id (vocabulary 18, so the fine-tuning run sets
  `model.vocab_size=18`); pixel sources use the byte tokenizer's specials (pixel v = v + 4)."""

  SOURCES = ("listops", "pathfinder", "image")

  def __init__(self, config):
    from experiments.tasks import classify  # pylint: disable=import-outside-toplevel
    source = config.data.source
    if source not in self.SOURCES:
      raise ConfigError(f"data.source={source!r}: MLM reads 'text' or a classification "
                        f"source's inputs ({', '.join(self.SOURCES)})")
    self.splits = {split: {"inputs": classify.load_split(config, split)["inputs"]}
                   for split in ("train", "eval")}
    self.token_offset = tokenizers.NUM_SPECIAL if source in classify.PIXEL_SOURCES else 0
    self.tokenizer = ListOpsMasking() if source == "listops" else tokenizers.ByteTokenizer()
    self.seq_len = self.splits["train"]["inputs"].shape[1]
    self.packed, self.info = False, {}


def model_inputs(batch: Mapping[str, Any], tokens) -> dict[str, Any]:
  """tokens, padding mask and (packed rows) segment ids and positions."""
  inputs = {"tokens": tokens, "mask": pad_mask(batch["inputs"])}
  for key in ("segment_ids", "positions"):
    if key in batch:
      inputs[key] = batch[key]
  return inputs


class MLMTask(Task):
  """MLM over `config.data.text` (default: the Python standard library's sources)."""

  def __init__(self, config):
    masking.check_options(config.mlm)
    if config.data.packing.enabled and config.data.source != "text":
      raise ConfigError(f"data.packing.enabled with data.source={config.data.source!r}: MLM "
                        "packs only 'text' documents")
    self.text = TextData(config) if config.data.source == "text" else TaskInputs(config)
    self.token_offset = getattr(self.text, "token_offset", 0)
    self.tokenizer, self.seq_len = self.text.tokenizer, self.text.seq_len
    self.train, self.eval = self.text.splits["train"], self.text.splits["eval"]
    super().__init__(config)

  def data_info(self) -> dict[str, float]:
    return {**super().data_info(), **self.text.info}

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.tokenizer.vocab_size
    model["max_length"] = model.get("max_length") or self.seq_len
    model["head"] = dict(model.get("head") or {"name": "mlm"})
    config = self.checked_model_config(model)
    if self.text.packed:
      segments = model_needs(config).segments
      packing.check_segments(self.config.data.packing.max_segments, segments.supported,
                             segments.limit, segments.by)
    self.vocab_size = config.vocab_size
    return config

  def mask(self, batch, rng):
    """(corrupted tokens, labels, weights, predict_positions or None): the step's masking."""
    m = self.config.mlm
    tokens = batch["inputs"]
    corrupted, selected = masking.mask_batch(tokens, rng, m, self.tokenizer, self.vocab_size)
    row_weight = batch["weights"][:, None] if "weights" in batch else 1.0
    if not m.predict_only_masked:
      return corrupted, tokens, selected.astype(jnp.float32) * row_weight, None
    positions, weights = masking.predict_positions(
        selected, masking.num_predictions(m.mask_rate, tokens.shape[1]))
    labels = jnp.take_along_axis(tokens, positions, axis=1)
    return corrupted, labels, weights * row_weight, positions

  def prepare(self, batch, rng, train):
    del train  # eval masks come from a fixed RNG, so eval is comparable across steps
    corrupted, labels, weights, positions = self.mask(batch, rng)
    inputs = model_inputs(batch, corrupted)
    if positions is not None:
      inputs["predict_positions"] = positions
    return inputs, {"labels": labels, "weights": weights}

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])

  def summarize(self, totals):
    out = dict(totals)
    out["perplexity"] = math.exp(min(totals["loss"], 50.0))
    return out
