"""ELECTRA: replaced-token detection (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators").

A small generator (an MLM: width and depth as fractions of the discriminator's, paper: 1/4 to
1/3 width) fills masked positions by sampling (Gumbel-max on its logits); the discriminator (our
Encoder with any variant + the `rtd` head) labels every real token as original or replaced.
Both train jointly on one loss

    loss = generator MLM loss + disc_weight * mean binary cross-entropy over real tokens

with disc_weight 50 (paper). The discrete sample carries no gradient, so the discriminator loss
does not train the generator. Token embeddings are shared: the generator reads the
discriminator's table through a learned linear map to its smaller width (the paper's ablation:
tying token embeddings gives most of the gain of tying all embeddings; positions stay separate
because the widths differ). Labels are "sampled token != original", so a sample that happens to
equal the original is labelled original (0), as in the paper.

`electra.generator = "unigram"`: no generator network; selected positions get tokens drawn from
the training corpus's unigram distribution (the cheap replaced-token objective of "Efficient
pre-training objectives for Transformers", Di Liello et al. 2021), loss = disc_weight * BCE.

Masking follows `config.mlm` (rate, split, token/whole-word/span; configs/electra.py uses
ELECTRA's 15% with 85% [MASK] and 15% kept); the generator always runs on the static P gathered
positions (`mlm.predict_only_masked` is implied), and only those positions can be replaced.

Parameters: {"discriminator": {"encoder", "head"}, "generator": {...}}. Fine-tuning loads the
discriminator's encoder, params["discriminator"]["encoder"] (same layout as a plain Model's
params["encoder"]).

Metrics: loss, gen_loss / gen_accuracy (masked-token accuracy of the generator), disc_loss,
disc_accuracy (all real tokens), rtd_precision / rtd_recall (of "replaced", at probability
0.5), original_accuracy (original tokens called original), replaced_fraction. At a ~13%
replaced rate the 0.5 threshold hides early learning (recall stays near 0 while the ranking
improves), so two threshold-free ones sit beside them: `rtd_auc`, the ROC AUC of the
discriminator's logits over real tokens (0.5 = chance), and `disc_loss_base_rate`, the BCE of
predicting the replaced fraction everywhere (the trivial solution's loss, the entropy of the
rate): disc_loss below it means the discriminator knows more than the base rate. The AUC comes
from a histogram of logits (RTD_BINS bins over +-RTD_LOGIT_RANGE) summed over batches and eval
batches like every (sum, count) metric, so it is the AUC of the whole eval set with logits
rounded to 1/128: exact but for pairs within one bin, which count one half.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from encoders import sharding
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Encoder, Model
from experiments.tasks import masking
from experiments.tasks.base import weighted_cross_entropy
from experiments.tasks.mlm import MLMTask, model_inputs

GENERATORS = ("mlm", "unigram")
RTD_BINS, RTD_LOGIT_RANGE = 4096, 16.0  # logit bins of width 1/128 over [-16, 16]


def rtd_histogram(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """[2, RTD_BINS] summed weights of original (row 0) and replaced (row 1) tokens per logit
  bin, ascending; logits beyond the range fall in the end bins."""
  scaled = (logits + RTD_LOGIT_RANGE) * (RTD_BINS / (2 * RTD_LOGIT_RANGE))
  index = jnp.clip(jnp.floor(scaled), 0, RTD_BINS - 1).astype(jnp.int32)
  return jnp.zeros((2, RTD_BINS), jnp.float32).at[labels.astype(jnp.int32), index].add(weights)


def histogram_auc(histogram: np.ndarray) -> float:
  """ROC AUC from `rtd_histogram` counts (any positive scale): P(replaced logit > original
  logit), pairs in the same bin counting one half; NaN without both classes."""
  original, replaced = np.asarray(histogram, np.float64)
  below = np.cumsum(original) - original  # original weight in lower bins
  pairs = original.sum() * replaced.sum()
  return float(np.sum(replaced * (below + 0.5 * original)) / pairs) if pairs > 0 else math.nan


def binary_entropy(rate: float) -> float:
  """Nats; the mean BCE of predicting `rate` for labels with that rate (0 at 0 and 1)."""
  return float(-sum(p * math.log(p) for p in (rate, 1.0 - rate) if p > 0))


def generator_config(disc: ModelConfig, width_fraction: float, depth_fraction: float
                     ) -> ModelConfig:
  """The generator: heads, width and FFN width scaled by `width_fraction` (per-head width kept,
  as ELECTRA's code), layers by `depth_fraction`, with a tied MLM head."""
  heads = max(1, round(disc.num_heads * width_fraction))
  return disc.replace(
      dim=heads * disc.resolved_head_dim, num_heads=heads, head_dim=0,
      mlp_dim=max(1, round(disc.mlp_dim * width_fraction)),
      num_layers=max(1, round(disc.num_layers * depth_fraction)),
      head=dict(name="mlm", tie_embeddings=True))


class Generator(nn.Module):
  """Encoder + tied MLM head reading a shared [vocab, disc_dim] token table."""
  config: ModelConfig

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], table: jax.Array, deterministic: bool):
    c = self.config
    if table.shape[-1] != c.dim:
      kernel = self.param("embed_project",
                          sharding.param(nn.initializers.normal(c.init_std), ("embed", None)),
                          (table.shape[-1], c.dim), c.params_dtype)
      table = table @ kernel
    hidden, aux = Encoder(c, name="encoder")(
        inputs["tokens"], mask=inputs.get("mask"), segment_ids=inputs.get("segment_ids"),
        positions=inputs.get("positions"), deterministic=deterministic, token_embedding=table)
    logits = c.build("head", name="head")(hidden, inputs=inputs, embedding=table,
                                          deterministic=deterministic)
    return logits, aux


class Electra(nn.Module):
  """Generator (None = unigram replacements) and discriminator; see the module docstring.

  inputs: `tokens` (the original row), `mask`, optional `segment_ids`/`positions`,
  `predict_positions` [B, P] and `predict_weights` [B, P] (the selected positions), and either
  `gen_tokens` (the generator's masked input) + `sample_key`, or `replacements` [B, P].
  Returns ({"disc_logits", "disc_labels", "replacements" [B, P], "gen_logits"?}, aux).
  """
  disc: ModelConfig
  gen: ModelConfig | None
  num_special: int
  temperature: float = 1.0

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], *, deterministic: bool = True):
    discriminator = Model(self.disc, name="discriminator")
    tokens = inputs["tokens"]
    batch = tokens.shape[0]
    positions = inputs.get("predict_positions", jnp.zeros((batch, 1), jnp.int32))
    weights = inputs.get("predict_weights", jnp.zeros(positions.shape, jnp.float32))
    out, aux = {}, {}
    if self.gen is not None:
      gen_inputs = {**inputs, "tokens": inputs.get("gen_tokens", tokens),
                    "predict_positions": positions}
      table = discriminator.encoder.embedding_table
      logits, gen_aux = Generator(self.gen, name="generator")(gen_inputs, table, deterministic)
      aux.update({f"generator/{k}": v for k, v in gen_aux.items()})
      out["gen_logits"] = logits
      key = inputs.get("sample_key", jax.random.PRNGKey(0))
      noisy = logits / self.temperature + jax.random.gumbel(key, logits.shape)
      noisy = noisy.at[..., :self.num_special].set(-jnp.inf)  # never sample specials
      sampled = jax.lax.stop_gradient(jnp.argmax(noisy, axis=-1))
    else:
      sampled = inputs.get("replacements", jnp.take_along_axis(tokens, positions, axis=1))
    rows = jnp.arange(batch)[:, None]
    current = tokens[rows, positions]
    # Scatter-add of the change: padded slots (weight 0) add 0, so duplicates cannot clash.
    delta = jnp.where(weights > 0, sampled.astype(tokens.dtype) - current, 0)
    disc_tokens = tokens.at[rows, positions].add(delta)
    out["replacements"] = sampled
    out["disc_labels"] = (disc_tokens != tokens).astype(jnp.float32)
    out["disc_logits"], disc_aux = discriminator({**inputs, "tokens": disc_tokens},
                                                 deterministic=deterministic)
    aux.update(disc_aux)
    return out, aux


class ElectraTask(MLMTask):
  """Joint generator + discriminator pretraining on `config.data.text` (see module doc)."""

  def __init__(self, config):
    e = config.electra
    if e.generator not in GENERATORS:
      raise ConfigError(f"electra.generator={e.generator!r}; allowed: {', '.join(GENERATORS)}")
    if not (0 < e.width_fraction <= 1 and 0 < e.depth_fraction <= 1):
      raise ConfigError(f"electra.width_fraction={e.width_fraction}, electra.depth_fraction="
                        f"{e.depth_fraction}; each must be in (0, 1]")
    if e.disc_weight <= 0 or e.temperature <= 0:
      raise ConfigError(f"electra.disc_weight={e.disc_weight}, electra.temperature="
                        f"{e.temperature}; both must be positive")
    super().__init__(config)
    counts = np.bincount(self.train["inputs"].ravel(), minlength=self.tokenizer.vocab_size)
    counts = counts.astype(np.float64)
    counts[:self.tokenizer.num_special] = 0
    with np.errstate(divide="ignore"):
      self.unigram_logits = np.log(counts / counts.sum()).astype(np.float32)

  def model_config(self, model: Mapping[str, Any]) -> ModelConfig:
    model = dict(model)
    model["head"] = dict(model.get("head") or {"name": "rtd"})
    if model["head"]["name"] != "rtd":
      raise ConfigError(f"model.head.name={model['head']['name']!r}; the electra task trains "
                        "the 'rtd' (replaced-token detection) head")
    return super().model_config(model)

  def build_model(self, model_config: ModelConfig) -> nn.Module:
    e = self.config.electra
    gen = None
    if e.generator == "mlm":
      gen = generator_config(model_config, e.width_fraction, e.depth_fraction)
    return Electra(model_config, gen, num_special=self.tokenizer.num_special,
                   temperature=e.temperature)

  def prepare(self, batch, rng, train):
    del train
    mask_rng, sample_rng = jax.random.split(rng)
    m = self.config.mlm
    tokens = batch["inputs"]
    corrupted, selected = masking.mask_batch(tokens, mask_rng, m, self.tokenizer,
                                             self.vocab_size)
    positions, weights = masking.predict_positions(
        selected, masking.num_predictions(m.mask_rate, tokens.shape[1]))
    inputs = model_inputs(batch, tokens)
    inputs.update(predict_positions=positions, predict_weights=weights)
    if self.config.electra.generator == "mlm":
      inputs.update(gen_tokens=corrupted, sample_key=sample_rng)
    else:
      inputs["replacements"] = jax.random.categorical(
          sample_rng, jnp.asarray(self.unigram_logits), shape=positions.shape)
    row_weight = batch["weights"][:, None] if "weights" in batch else 1.0
    targets = {"gen_labels": jnp.take_along_axis(tokens, positions, axis=1),
               "gen_weights": weights * row_weight,
               "disc_weights": inputs["mask"].astype(jnp.float32) * row_weight}
    return inputs, targets

  def metrics(self, outputs, targets):
    w = targets["disc_weights"]
    logits, labels = outputs["disc_logits"].astype(jnp.float32), outputs["disc_labels"]
    count = w.sum()
    disc_loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * w).sum()
    predicted = (logits > 0).astype(jnp.float32)
    tp = (predicted * labels * w).sum()
    out = {"disc_loss": (disc_loss, count),
           "disc_accuracy": (((predicted == labels) * w).sum(), count),
           "rtd_precision": (tp, (predicted * w).sum()),
           "rtd_recall": (tp, (labels * w).sum()),
           "original_accuracy": (((1 - predicted) * (1 - labels) * w).sum(),
                                 ((1 - labels) * w).sum()),
           "replaced_fraction": ((labels * w).sum(), count),
           "rtd_histogram": (rtd_histogram(logits, labels, w), count)}
    total = self.config.electra.disc_weight * disc_loss / jnp.maximum(count, 1e-9)
    if "gen_logits" in outputs:
      gen = weighted_cross_entropy(outputs["gen_logits"], targets["gen_labels"],
                                   targets["gen_weights"])
      out["gen_loss"], out["gen_accuracy"] = gen["loss"], gen["accuracy"]
      total = total + gen["loss"][0] / jnp.maximum(gen["loss"][1], 1e-9)
    # The joint loss as (sum, count) over real tokens, so batches aggregate by token count.
    out["loss"] = (total * count, count)
    return out

  def summarize(self, totals):
    """The histogram -> rtd_auc; the replaced fraction -> disc_loss_base_rate."""
    out = dict(totals)
    out["rtd_auc"] = histogram_auc(out.pop("rtd_histogram"))
    out["disc_loss_base_rate"] = binary_entropy(float(totals["replaced_fraction"]))
    return out
