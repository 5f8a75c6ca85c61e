"""ELECTRA: labels are exactly "token differs from the original", parameter layout, the unigram
variant, the threshold-free RTD metrics against direct computations, and a short joint run whose
loss decreases."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import electra as electra_config
from experiments.metrics import read_jsonl
from experiments.study import set_field
from experiments.tasks.electra import (
  Electra,
  binary_entropy,
  generator_config,
  histogram_auc,
  rtd_histogram,
)
from experiments.train import train_and_evaluate
from tests.conftest import random_params, tiny_config

B, T, P = 8, 24, 6


def batch(vocab, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab, (B, T)).astype(np.int32)
  tokens[:, 0] = 1
  tokens[1, 18:] = 0
  positions = np.stack([rng.choice(np.arange(1, 18), P, replace=False) for _ in range(B)])
  weights = np.ones((B, P), np.float32)
  weights[:, -1] = 0  # a padded prediction slot (position still points at a real token)
  return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(tokens != 0),
          "predict_positions": jnp.asarray(positions, jnp.int32),
          "predict_weights": jnp.asarray(weights)}


def expected_labels(inputs, replacements):
  tokens, pos, w = (np.asarray(inputs[k]) for k in ("tokens", "predict_positions",
                                                     "predict_weights"))
  labels = np.zeros(tokens.shape, np.float32)
  for b in range(B):
    for p in range(P):
      if w[b, p] > 0:
        labels[b, pos[b, p]] = float(replacements[b, p] != tokens[b, pos[b, p]])
  return labels


def test_generator_labels_are_token_differs_from_original():
  disc = tiny_config(vocab_size=6, max_length=T, num_layers=2, head=dict(name="rtd"))
  gen = generator_config(disc, 0.25, 0.5)
  assert (gen.dim, gen.num_heads, gen.num_layers, gen.mlp_dim) == (8, 1, 1, 12)
  model = Electra(disc, gen, num_special=4)
  inputs = batch(6)
  inputs["gen_tokens"] = inputs["tokens"]
  params = random_params(model, inputs)
  assert set(params) == {"discriminator", "generator"}
  assert set(params["discriminator"]) == {"encoder", "head"}
  assert "token_embed" in params["discriminator"]["encoder"]
  assert "token_embed" not in params["generator"]["encoder"]  # shared with the discriminator
  apply = jax.jit(model.apply)
  same = 0
  for seed in range(3):
    out, _ = apply({"params": params}, {**inputs, "sample_key": jax.random.PRNGKey(seed)})
    replacements = np.asarray(out["replacements"])
    assert replacements.min() >= 4  # specials are never sampled
    np.testing.assert_array_equal(out["disc_labels"], expected_labels(inputs, replacements))
    orig = np.take_along_axis(np.asarray(inputs["tokens"]), np.asarray(
        inputs["predict_positions"]), 1)
    same += ((replacements == orig) & (np.asarray(inputs["predict_weights"]) > 0)).sum()
    assert out["gen_logits"].shape == (B, P, 6) and out["disc_logits"].shape == (B, T)
  assert same > 0  # with 2 regular tokens the generator often samples the original: label 0


def test_unigram_replacements_label_original_samples_zero():
  disc = tiny_config(max_length=T, num_layers=1, head=dict(name="rtd"))
  model = Electra(disc, None, num_special=4)
  inputs = batch(37, seed=1)
  orig = np.take_along_axis(np.asarray(inputs["tokens"]), np.asarray(inputs["predict_positions"]),
                            1)
  replacements = np.where(np.arange(P) % 2 == 0, orig, (orig - 4 + 1) % 33 + 4)  # half original
  inputs["replacements"] = jnp.asarray(replacements)
  params = random_params(model, inputs)
  assert set(params) == {"discriminator"}
  out, _ = jax.jit(model.apply)({"params": params}, inputs)
  labels = expected_labels(inputs, replacements)
  np.testing.assert_array_equal(out["disc_labels"], labels)
  assert labels.sum() == B * 2  # odd slots 1 and 3 (slot 5 is padding); even ones are original


def rank_auc(scores, labels):
  """Mann-Whitney ROC AUC, ties counting one half."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  greater = (pos[:, None] > neg[None, :]).sum()
  ties = (pos[:, None] == neg[None, :]).sum()
  return (greater + 0.5 * ties) / (len(pos) * len(neg))


def test_rtd_auc_from_histograms_summed_over_batches_equals_the_direct_auc():
  """Four eval batches with padding (weight 0), ~13% replaced, as the eval loop sums them."""
  rng = np.random.default_rng(0)
  labels = (rng.random((4, 2, 300)) < 0.13).astype(np.float32)
  weights = (rng.random(labels.shape) < 0.9).astype(np.float32)
  real = weights > 0
  hist = jax.jit(rtd_histogram)
  for logits, tolerance in (
      ((rng.integers(-300, 300, labels.shape) + 0.5) / 128, 1e-12),  # bin centres: exact
      (rng.normal(size=labels.shape) + labels - 2.0, 1e-3),  # within-bin pairs count 1/2
      (np.where(labels > 0, 20.0, -20.0), 1e-12)):  # beyond the range: end bins
    summed = sum(np.asarray(hist(*map(jnp.asarray, (logits[i], labels[i], weights[i]))))
                 for i in range(4))
    assert abs(histogram_auc(summed) - rank_auc(logits[real], labels[real])) < tolerance
  assert np.isnan(histogram_auc(np.zeros((2, 8))))


def test_base_rate_bce_is_the_loss_of_predicting_the_rate():
  labels = np.zeros(1000)
  labels[:130] = 1
  bce = -np.mean(labels * np.log(0.13) + (1 - labels) * np.log(0.87))
  np.testing.assert_allclose(binary_entropy(0.13), bce, rtol=1e-12)
  assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0


def test_warmup_is_a_tenth_of_num_steps_unless_set():
  """configs/mlm.py, and configs/electra.py built on it: overriding num_steps moves the warmup;
  an explicit warmup (e.g. the baselines' 100) stays."""
  config = electra_config.get_config("small")
  assert config.train.warmup_steps == 200
  set_field(config, "train.num_steps", 300)
  assert config.train.warmup_steps == 30
  set_field(config, "train.warmup_steps", 100)
  set_field(config, "train.num_steps", 360)
  assert config.train.warmup_steps == 100


@pytest.mark.slow
def test_electra_run_reports_rtd_metrics_and_loss_decreases(tmp_path):
  config = electra_config.get_config("tiny")
  config.data.text.update(max_bytes=2_000_000, seq_len=32, max_eval_examples=32)
  config.data.cache_dir = str(tmp_path / "cache")
  config.model.update(num_layers=1)
  config.train.update(batch_size=8, num_steps=12, warmup_steps=1, log_every=4, eval_every=12,
                      checkpoint_every=12, async_checkpoints=False, learning_rate=3e-3)
  config.eval.update(batch_size=16, max_batches=1)
  config.progress_bar = False
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  for key in ("gen_accuracy", "disc_accuracy", "rtd_precision", "rtd_recall",
              "original_accuracy", "replaced_fraction", "rtd_auc"):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["disc_loss_base_rate"] == binary_entropy(metrics["replaced_fraction"])
  records = read_jsonl(os.path.join(tmp_path, "run", "metrics.jsonl"))
  assert all("rtd_auc" in r and not any(k.startswith("rtd_histogram") for k in r)
             for r in records if r["split"] in ("train", "eval"))
  info = next(r for r in records if r["split"] == "info")
  assert info["data/padding_fraction"] <= info["data/padding_fraction_before_packing"]
  train = {r["step"]: r for r in records if r["split"] == "train"}
  assert train[12]["loss"] < train[4]["loss"]
  np.testing.assert_allclose(train[12]["loss"], train[12]["gen_loss"] + 50 * train[12][
      "disc_loss"], rtol=1e-5)
