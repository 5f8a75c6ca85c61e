"""GLUE fine-tuning (experiments/data/glue.py): one `glue/<task>` per run, sentence or pair
inputs with token types (`model.type_vocab_size = 0`: none, as RoBERTa and ModernBERT), a
pooled classification head (STS-B: one output, regression).

Training loss: cross-entropy (MSE for STS-B). Every evaluation also reports the task's
official metrics and score (experiments/tasks/glue_metrics.py) over the whole validation set
(MNLI: matched and mismatched). Tokenizer (`data.glue.tokenizer`): "bytes", "wordpiece" (the
vocabulary trained on `data.text`'s corpus, the one our MLM/ELECTRA runs use), or a checkpoint
directory / packaged name whose tokenizer.json is used (for `init_from.pretrained`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from encoders.config import ModelConfig
from experiments.data import glue, pipeline, text_corpus, tokenizers
from experiments.tasks import glue_metrics
from experiments.tasks.base import Task, pad_mask, weighted_cross_entropy


def make_tokenizer(config):
  """The tokenizer named by `data.glue.tokenizer` (see the module docstring)."""
  kind, d = config.data.glue.tokenizer, config.data
  if kind == "bytes":
    return tokenizers.ByteTokenizer()
  if kind == "wordpiece":
    texts = text_corpus.read_documents(d.text.dir or None, pattern=d.text.pattern,
                                       eval_fraction=d.text.eval_fraction,
                                       max_bytes=d.text.max_bytes)
    return tokenizers.make_tokenizer("wordpiece", vocab_size=d.text.vocab_size,
                                     train_texts=texts["train"], cache_dir=d.cache_dir,
                                     corpus_key=text_corpus.corpus_key(texts))
  from experiments.data import hf_files  # pylint: disable=import-outside-toplevel
  return hf_files.CheckpointTokenizer(kind)


class GLUETask(Task):
  """One GLUE task (`data.glue.task`), fine-tuned and scored with its official metrics."""

  def __init__(self, config):
    g = config.data.glue
    self.name, self.spec = g.task, glue.task(g.task)
    self.tokenizer = make_tokenizer(config)
    kwargs = dict(tokenizer=self.tokenizer, max_length=g.max_length, data_dir=g.data_dir)
    self.train = glue.load_glue(self.name, "train", max_examples=g.max_train, **kwargs)
    parts = [glue.load_glue(self.name, split, max_examples=g.max_eval, **kwargs)
             for split in self.spec.eval_splits]
    self.eval = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    self.eval["group"] = np.concatenate([np.full(len(p["labels"]), i, np.int32)
                                         for i, p in enumerate(parts)])
    super().__init__(config)

  @property
  def regression(self) -> bool:
    return self.spec.num_classes == 0

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or self.tokenizer.vocab_size
    model["max_length"] = model.get("max_length") or self.train["inputs"].shape[1]
    # 0: no type table (a model pretrained without token types: pairs are told apart by [SEP])
    model["type_vocab_size"] = model.get("type_vocab_size", 2)
    head = dict(model.get("head") or {"name": "classification"})
    head["num_classes"] = self.spec.num_classes or 1
    model["head"] = head
    return self.checked_model_config(model)

  def prepare(self, batch, rng, train):
    del rng, train
    tokens = batch["inputs"]
    weights = batch.get("weights")
    if weights is None:
      weights = jnp.ones(tokens.shape[:1], jnp.float32)
    inputs = {"tokens": tokens, "mask": pad_mask(tokens, self.tokenizer.PAD_ID),
              "type_ids": batch["type_ids"]}
    return inputs, {"labels": batch.get("labels"), "weights": weights}

  def metrics(self, outputs, targets):
    if not self.regression:
      return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])
    error = outputs[..., 0].astype(jnp.float32) - targets["labels"]
    weights = targets["weights"]
    return {"loss": ((error * error * weights).sum(), weights.sum())}

  def corpus_metrics(self, model, params) -> dict[str, float]:
    """The official metrics over the whole validation set (correlations need all of it)."""

    @jax.jit
    def predict(params, batch):
      inputs, _ = self.prepare(batch, None, False)
      out = model.apply({"params": params}, inputs)[0]
      return out[..., 0] if self.regression else jnp.argmax(out, -1)

    arrays = {k: self.eval[k] for k in ("inputs", "type_ids")}
    chunks = [np.asarray(predict(params, batch))[batch["weights"] > 0]
              for batch in pipeline.eval_batches(arrays, self.config.eval.batch_size)]
    return glue_metrics.task_metrics(self.name, np.concatenate(chunks), self.eval["labels"],
                                     self.eval["group"])
