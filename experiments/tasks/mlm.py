"""Masked language modelling on a local text corpus (BERT, Devlin et al. 2019).

Dynamic masking (RoBERTa, Liu et al. 2019): each step draws a fresh mask on device from the
step's RNG, so masks are a pure function of (seed, step). Each regular token is selected with
probability `mask_rate`; of the selected, 80% become [MASK], 10% a random token and 10% stay
(configurable). The loss is cross-entropy over selected positions only. Metrics: loss,
masked-token accuracy and perplexity (exp of the mean masked loss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments.data import text_corpus, tokenizers
from experiments.tasks.base import (
    Task,
    pad_mask,
    weighted_cross_entropy,
)


def mask_tokens(tokens: jax.Array, rng: jax.Array, *, rate: float, mask_id: int,
                first_regular_id: int, vocab_size: int,
                mask_fraction: float = 0.8, random_fraction: float = 0.1):
  """BERT masking. Returns (corrupted tokens, selected positions as float weights)."""
  select_rng, kind_rng, random_rng = jax.random.split(rng, 3)
  regular = tokens >= first_regular_id
  selected = jax.random.bernoulli(select_rng, rate, tokens.shape) & regular
  u = jax.random.uniform(kind_rng, tokens.shape)
  to_mask = selected & (u < mask_fraction)
  to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
  random_tokens = jax.random.randint(random_rng, tokens.shape, first_regular_id, vocab_size)
  corrupted = jnp.where(to_mask, mask_id, jnp.where(to_random, random_tokens, tokens))
  return corrupted.astype(tokens.dtype), selected.astype(jnp.float32)


class MLMTask(Task):
  """MLM over `config.data.text` (default: the Python standard library's sources)."""

  def __init__(self, config):
    d = config.data
    if d.source != "text":
      raise ConfigError(f"data.source={d.source!r}: the mlm task reads 'text'")
    self.tokenizer = tokenizers.ByteTokenizer()
    streams = text_corpus.load_text_corpus(
        d.text.dir or None, pattern=d.text.pattern, eval_fraction=d.text.eval_fraction,
        max_bytes=d.text.max_bytes, tokenizer=self.tokenizer)
    self.seq_len = d.text.seq_len
    self.train = {"inputs": self._examples(streams["train"])}
    eval_inputs = self._examples(streams["eval"])
    if d.text.max_eval_examples:
      eval_inputs = eval_inputs[:d.text.max_eval_examples]
    self.eval = {"inputs": eval_inputs}
    super().__init__(config)

  def _examples(self, stream: np.ndarray) -> np.ndarray:
    chunks = text_corpus.chunk_stream(stream, self.seq_len - 1)
    cls = np.full((len(chunks), 1), tokenizers.CLS_ID, np.int32)
    return np.concatenate([cls, chunks], axis=1)

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.tokenizer.vocab_size
    model["max_length"] = model.get("max_length") or self.seq_len
    model["head"] = dict(model.get("head") or {"name": "mlm"})
    return self.checked_model_config(model)

  def prepare(self, batch, rng, train):
    del train  # eval masks come from a fixed RNG, so eval is comparable across steps
    m = self.config.mlm
    tokens = batch["inputs"]
    corrupted, selected = mask_tokens(
        tokens, rng, rate=m.mask_rate, mask_id=tokenizers.MASK_ID,
        first_regular_id=tokenizers.NUM_SPECIAL, vocab_size=self.tokenizer.vocab_size,
        mask_fraction=m.mask_fraction, random_fraction=m.random_fraction)
    weights = selected
    if "weights" in batch:
      weights = weights * batch["weights"][:, None]
    return {"tokens": corrupted, "mask": pad_mask(tokens)}, {"labels": tokens, "weights": weights}

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])

  def summarize(self, totals):
    out = dict(totals)
    out["perplexity"] = math.exp(min(totals["loss"], 50.0))
    return out
