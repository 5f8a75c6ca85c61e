"""Contrastive sentence-embedding training and embedding distillation on query/document pairs.

Loss: InfoNCE with in-batch negatives (van den Oord et al. 2018; Karpukhin et al. 2020, DPR):
query i's positive is document i, every other document of the *global* batch is a negative;
cosine similarities over a temperature; `symmetric` adds the document -> query direction
(CLIP, Radford et al. 2021). The batch is sharded over the mesh's data axis and the [B, B]
similarity matrix is one jitted product of the sharded query and document embeddings, so XLA
all-gathers the other devices' documents: every device sees all B - 1 negatives, exactly the
single-device loss (tests/test_embed.py checks this on 8 fake devices). With
`train.grad_accum_steps = k` the negatives are those of each micro-batch (B / k).

Matryoshka (Kusupati et al. 2022): with `embed.matryoshka_dims` the loss is averaged over the
nested prefixes (each re-normalised) as well as the full embedding. 2D Matryoshka over layers
and dims needs the `embedding_layers` head (filled in automatically):
- `2dmse` (Li et al. 2024, "2D Matryoshka Sentence Embeddings"): every step trains the last
  layer and one layer sampled uniformly from the shallower listed ones, each at all dims;
- `starbucks` (Zhuang et al. 2024, "Starbucks"): a fixed list of (layer, dim) pairs, averaged.

Distillation from a teacher checkpoint's embeddings (computed once, cached in
`data.cache_dir`): `mse` between student and teacher embeddings (same width; e.g. set
`model.head.projection_dim`), or `kl` between the teacher's and the student's softmaxed
query-document similarity matrices (width-agnostic; the relational distillation of DSE /
MiniLM-style embedding distillation).

Batches: `inputs` (queries) and `documents`, [batch, doc_length] token ids of the teacher's
tokenizer, PAD = 0; the model sees both as one [2 * batch, doc_length] batch. Evaluation adds
corpus metrics (MRR@10, nDCG@10, Recall@100 of every eval query against all eval documents)
for the student and, when distilling, the teacher; `embed.whitening` whitens the embeddings
first (WhiteningBERT, Huang et al. 2021), fitted on a seeded sample of training pairs or on the
eval corpus itself. `embed.tokenizer = "bytes"` uses the byte-level tokenizer of the text
corpus (experiments/data/tokenizers.py), so a run can fine-tune an MLM/ELECTRA pretraining
run's encoder (`init_from.encoder_only`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.heads.embedding import l2_normalize
from experiments import pretrained
from experiments.data import hf_files, pipeline, retrieval, tokenizers
from experiments.tasks.base import Metrics, Task

SCHEDULES = ("none", "2dmse", "starbucks")
WHITENING = ("none", "train", "eval")
DISTILL = ("mse", "kl")


def info_nce(q: jax.Array, d: jax.Array, weights: jax.Array, temperature: float,
             symmetric: bool = True) -> tuple[jax.Array, jax.Array]:
  """(mean loss, top-1 accuracy) over rows with weight > 0; q, d [B, D], document i is query
  i's positive; rows and columns with weight 0 (padding) take no part."""
  q, d = l2_normalize(q.astype(jnp.float32)), l2_normalize(d.astype(jnp.float32))
  valid = weights > 0
  logits = jnp.where(valid[None, :], q @ d.T / temperature, -1e9)
  labels = jnp.arange(q.shape[0])
  count = jnp.maximum(weights.sum(), 1e-9)
  loss = (optax.softmax_cross_entropy_with_integer_labels(logits, labels) * weights).sum()
  if symmetric:
    columns = jnp.where(valid[:, None], logits, -1e9).T
    backward = optax.softmax_cross_entropy_with_integer_labels(columns, labels)
    loss = (loss + (backward * weights).sum()) / 2
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * weights
  return loss / count, correct.sum() / count


def similarity_kl(student: tuple[jax.Array, jax.Array], teacher: tuple[jax.Array, jax.Array],
                  weights: jax.Array, temperature: float) -> jax.Array:
  """Mean over valid queries of KL(softmax(T / t) || softmax(S / t)) between the teacher's and
  the student's query-document cosine similarity rows."""
  valid = weights > 0

  def log_probs(q, d):
    sims = l2_normalize(q.astype(jnp.float32)) @ l2_normalize(d.astype(jnp.float32)).T
    return jax.nn.log_softmax(jnp.where(valid[None, :], sims / temperature, -1e9), -1)

  s, t = log_probs(*student), log_probs(*teacher)
  kl = jnp.where(valid[None, :], jnp.exp(t) * (t - s), 0.0).sum(-1)
  return (kl * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


def embedding_mse(student: jax.Array, teacher: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean over valid rows of the squared distance between embeddings."""
  err = ((student.astype(jnp.float32) - teacher) ** 2).sum(-1)
  return (err * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


def loss_terms(embed, head_layers: tuple[int, ...], width: int,
               targets: Mapping[str, jax.Array]) -> list[tuple[Any, int]]:
  """(head output index, prefix width) pairs the contrastive loss averages over (module doc).

  `head_layers`: the depths of the `embedding_layers` head's outputs (() for one output); the
  index is traced for 2dmse's sampled shallower output (`targets["layer"]`, training only).
  """
  dims = sorted({int(m) for m in embed.matryoshka_dims if m < width} | {width})
  if embed.schedule == "starbucks":
    return [(head_layers.index(int(layer)), int(m)) for layer, m in embed.starbucks]
  last = max(len(head_layers) - 1, 0)
  terms = [(last, m) for m in dims]
  if embed.schedule == "2dmse" and "layer" in targets and last > 0:
    terms += [(targets["layer"][0], m) for m in dims]
  return terms


def embedding_losses(outputs: jax.Array, targets: Mapping[str, jax.Array], embed,
                     head_layers: tuple[int, ...] = ()) -> Metrics:
  """The embed task's metrics: outputs [2B, D] (or [len(head_layers), 2B, D]), queries then
  documents; targets: `weights` [B] and optionally teacher embeddings and the 2dmse `layer`
  (an index into the shallower head outputs)."""
  e = embed
  weights = targets["weights"]
  size = weights.shape[0]
  layered = outputs if outputs.ndim == 3 else outputs[None]
  queries, docs = layered[:, :size], layered[:, size:]
  losses, accuracy = [], None
  for index, dim in loss_terms(e, tuple(head_layers), layered.shape[-1], targets):
    q, d = jnp.take(queries, index, axis=0), jnp.take(docs, index, axis=0)
    loss, accuracy = info_nce(q[:, :dim], d[:, :dim], weights, e.temperature, e.symmetric)
    losses.append(loss)
  contrastive = sum(losses) / len(losses)
  count = weights.sum()
  out = {"contrastive_loss": (contrastive * count, count),
         "accuracy": (accuracy * count, count)}  # of the last term (starbucks: its full pair)
  total = e.contrastive_weight * contrastive
  if "teacher_query" in targets:
    q, d = queries[-1], docs[-1]
    t_q, t_d = targets["teacher_query"], targets["teacher_document"]
    if e.distill == "mse":
      if q.shape[-1] != t_q.shape[-1]:
        raise ConfigError(f"embed.distill='mse' needs the student's width {q.shape[-1]} to "
                          f"equal the teacher's {t_q.shape[-1]} (model.head.projection_dim)")
      distill = (embedding_mse(q, t_q, weights) + embedding_mse(d, t_d, weights)) / 2
    else:
      distill = similarity_kl((q, d), (t_q, t_d), weights, e.distill_temperature)
    out["distill_loss"] = (distill * count, count)
    total = total + e.distill_weight * distill
  out["loss"] = (total * count, count)
  return out


def whitening(vectors: np.ndarray, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
  """(mean, W) with cov((x - mean) @ W) = I: the whitening of WhiteningBERT (Huang et al.
  2021), W = U diag(1 / sqrt(s)) from the SVD of the embeddings' covariance U diag(s) U^T."""
  mean = vectors.mean(axis=0)
  u, s, _ = np.linalg.svd(np.cov((vectors - mean).T))
  return mean, u / np.sqrt(s + eps)


def _key(*parts: Any) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class EmbedTask(Task):
  """Query/document pairs (`data.source = "retrieval"`), contrastive loss, optional teacher."""

  def __init__(self, config):
    d, e = config.data, config.embed
    if d.source != "retrieval":
      raise ConfigError(f"data.source={d.source!r}: the embed task reads 'retrieval'")
    if e.schedule not in SCHEDULES:
      raise ConfigError(f"embed.schedule={e.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if e.teacher and e.distill not in DISTILL:
      raise ConfigError(f"embed.distill={e.distill!r}; allowed: {', '.join(DISTILL)}")
    if e.temperature <= 0:
      raise ConfigError(f"embed.temperature={e.temperature} must be positive")
    if not 0 < e.query_length <= e.doc_length:
      raise ConfigError(f"embed.query_length={e.query_length} must be in [1, embed.doc_length="
                        f"{e.doc_length}] (queries are padded to the document length)")
    self.config = config  # (also set by Task.__init__, which needs the arrays built here)
    r = d.retrieval
    self.pairs = retrieval.load_pairs(r.dir or None, eval_fraction=r.eval_fraction,
                                      max_train=r.max_train, max_eval=r.max_eval)
    if e.whitening not in WHITENING:
      raise ConfigError(f"embed.whitening={e.whitening!r}; allowed: {', '.join(WHITENING)}")
    self.tokenizer = (tokenizers.ByteTokenizer() if e.tokenizer == "bytes" else
                      hf_files.load_tokenizer(hf_files.resolve(e.tokenizer), e.doc_length))
    self.train, self.eval = (self._tokenize(self.pairs[s]) for s in ("train", "eval"))
    self.teacher_metrics: dict[str, float] = {}
    self.head_layers: tuple[int, ...] = ()  # set by model_config for the 2D schedules
    if e.teacher:
      vectors = self._teacher_embeddings()
      for split, arrays in (("train", self.train), ("eval", self.eval)):
        arrays["teacher_query"], arrays["teacher_document"] = vectors[split]
      self.teacher_metrics = {f"teacher_{k}": v for k, v in
                              retrieval.evaluate_embeddings(*vectors["eval"]).items()}
    super().__init__(config)

  def _token_ids(self, texts, length: int) -> np.ndarray:
    if isinstance(self.tokenizer, tokenizers.ByteTokenizer):  # [CLS] + UTF-8 bytes, truncated
      ids = np.zeros((len(texts), length), np.int32)
      for row, text in enumerate(texts):
        piece = np.concatenate([[tokenizers.CLS_ID], self.tokenizer.encode(text)])[:length]
        ids[row, :len(piece)] = piece
      return ids
    return hf_files.tokenize(self.tokenizer, texts, length)["tokens"]

  def _tokenize(self, pairs) -> dict[str, np.ndarray]:
    e = self.config.embed
    queries = self._token_ids([q for q, _ in pairs], e.query_length)
    docs = self._token_ids([doc for _, doc in pairs], e.doc_length)
    pad = e.doc_length - e.query_length
    return {"inputs": np.pad(queries, ((0, 0), (0, pad))), "documents": docs}

  def _teacher_embeddings(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Teacher query and document embeddings of both splits, computed once and cached."""
    e = self.config.embed
    path = hf_files.resolve(e.teacher)
    weights = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors"))
    key = _key("v2", (path / "config.json").read_text(), weights, self.pairs, e.query_length,
               e.doc_length)
    cache = os.path.join(self.config.data.cache_dir, f"retrieval_teacher_{key}.npz")
    if os.path.exists(cache):
      with np.load(cache) as f:
        return {s: (f[f"{s}_query"], f[f"{s}_document"]) for s in ("train", "eval")}
    teacher = pretrained.load(path)
    out = {}
    for split in ("train", "eval"):
      print(f"embed: teacher {e.teacher} embeds the {split} pairs (once; cached)", flush=True)
      out[split] = (
          pretrained.embed(teacher, [q for q, _ in self.pairs[split]], e.teacher_batch_size,
                           e.query_length),
          pretrained.embed(teacher, [d for _, d in self.pairs[split]], e.teacher_batch_size,
                           e.doc_length))
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache + ".tmp.npz", **{f"{s}_{k}": v for s, pair in out.items()
                                    for k, v in zip(("query", "document"), pair)})
    os.replace(cache + ".tmp.npz", cache)
    return out

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    e = self.config.embed
    model = dict(model)
    model["vocab_size"] = model.get("vocab_size") or (
        self.tokenizer.vocab_size if isinstance(self.tokenizer, tokenizers.ByteTokenizer)
        else self.tokenizer.get_vocab_size())
    model["max_length"] = model.get("max_length") or e.doc_length
    head = dict(model.get("head") or {"name": "embedding"})
    if e.schedule != "none":
      if head.get("name") not in ("embedding", "embedding_layers"):
        raise ConfigError(f"embed.schedule={e.schedule!r} needs model.head.name="
                          "'embedding_layers'")
      listed = sorted({int(layer) for layer, _ in e.starbucks})
      default = range(1, model["num_layers"] + 1) if e.schedule == "2dmse" else listed
      head.update(name="embedding_layers", layers=tuple(head.get("layers") or default))
      needed = {model["num_layers"]} | (set(listed) if e.schedule == "starbucks" else set())
      if not needed <= set(head["layers"]) or head["layers"][-1] != model["num_layers"]:
        raise ConfigError(f"model.head.layers={head['layers']}: embed.schedule={e.schedule!r} "
                          f"needs layers {sorted(needed)}, the last one last")
    if head.get("name") == "embedding_layers":
      self.head_layers = tuple(int(layer) for layer in head.get("layers") or ())
    model["head"] = head
    return self.checked_model_config(model)

  def prepare(self, batch, rng, train):
    e = self.config.embed
    tokens = jnp.concatenate([batch["inputs"], batch["documents"]])
    size = batch["inputs"].shape[0]
    weights = batch.get("weights")
    if weights is None:
      weights = jnp.ones((size,), jnp.float32)
    targets = {"weights": weights}
    if "teacher_query" in batch:
      targets.update(teacher_query=batch["teacher_query"],
                     teacher_document=batch["teacher_document"])
    if train and e.schedule == "2dmse":  # one shallower output per step, same for all rows
      shallow = max(len(self.head_layers) - 1, 1)
      targets["layer"] = jnp.full((size,), jax.random.randint(rng, (), 0, shallow))
    return {"tokens": tokens, "mask": tokens != 0}, targets

  def metrics(self, outputs, targets):
    return embedding_losses(outputs, targets, self.config.embed, self.head_layers)

  def initial_params(self, params):
    """`embed.student_init="teacher_pca"`: the student's token (and learned position)
    embeddings start as the teacher's, projected on the top `model.dim` principal components
    of the teacher's token table (a lexical prior the 4k training pairs cannot teach)."""
    e = self.config.embed
    if e.student_init == "random":
      return params
    if e.student_init != "teacher_pca":
      raise ConfigError(f"embed.student_init={e.student_init!r}; allowed: random, teacher_pca")
    weights = pretrained.read_weights(hf_files.resolve(e.teacher or e.tokenizer))
    tables = {name: next(v for k, v in weights.items() if k.endswith(f"embeddings.{name}.weight"))
              for name in ("word_embeddings", "position_embeddings")}
    encoder = dict(params["encoder"])
    tokens = encoder["token_embed"]["embedding"]
    if (tokens.shape[0] != tables["word_embeddings"].shape[0]
        or tokens.shape[1] > tables["word_embeddings"].shape[1]):
      raise ConfigError(f"embed.student_init='teacher_pca' needs the teacher's vocabulary and "
                        f"at most its width (teacher {tables['word_embeddings'].shape}, "
                        f"student {tokens.shape})")
    mean = tables["word_embeddings"].mean(0)
    basis = np.linalg.svd(tables["word_embeddings"] - mean, full_matrices=False)[2]
    basis = basis[:tokens.shape[1]].T  # [teacher dim, student dim]
    encoder["token_embed"] = {"embedding": ((tables["word_embeddings"] - mean) @ basis)
                              .astype(tokens.dtype)}
    if "position" in encoder and "embedding" in encoder["position"]:
      rows = encoder["position"]["embedding"].shape[0]
      encoder["position"] = {"embedding": (tables["position_embeddings"][:rows] @ basis)
                             .astype(tokens.dtype)}
    return {**params, "encoder": encoder}

  def corpus_metrics(self, model, params) -> dict[str, float]:
    """Retrieval over the eval split: every query against all eval documents."""

    @jax.jit
    def encode(params, tokens):
      out = model.apply({"params": params}, {"tokens": tokens, "mask": tokens != 0})[0]
      return out if out.ndim == 2 else out[-1]

    size = self.config.eval.batch_size

    def embed_all(arrays, key):
      chunks = [np.asarray(encode(params, batch[key]))[batch["weights"] > 0]
                for batch in pipeline.eval_batches({key: arrays[key]}, size)]
      return np.concatenate(chunks).astype(np.float64)

    queries, docs = embed_all(self.eval, "inputs"), embed_all(self.eval, "documents")
    e = self.config.embed
    if e.whitening != "none":
      if e.whitening == "train":  # a seeded sample of training pairs (no eval text seen)
        rows = np.random.default_rng(self.config.seed).permutation(
            len(self.train["inputs"]))[:e.whitening_sample]
        sample = {k: self.train[k][rows] for k in ("inputs", "documents")}
        fit = np.concatenate([embed_all(sample, "inputs"), embed_all(sample, "documents")])
      else:  # "eval": the corpus being searched, as in WhiteningBERT
        fit = np.concatenate([queries, docs])
      mean, transform = whitening(fit)
      queries, docs = (queries - mean) @ transform, (docs - mean) @ transform
    metrics = retrieval.evaluate_embeddings(np.asarray(l2_normalize(queries)),
                                            np.asarray(l2_normalize(docs)))
    return {**metrics, **self.teacher_metrics}
