"""GLUE from our own pretraining runs (the README's recipe, `configs/glue.py:<run workdir>`):
a model pretrained without token types keeps none, or fills a new type table with zeros, and
fine-tunes end to end on TFDS mock data from an MLM and a ModernBERT tiny run."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from encoders.config import ModelConfig
from encoders.model import Model
from experiments import init_from
from experiments.steps import TrainState


@pytest.mark.slow
def test_a_new_type_table_starts_at_zero_and_keeps_the_pretrained_function():
  source = ModelConfig(vocab_size=30, dim=16, num_layers=2, num_heads=2, mlp_dim=32,
                       max_length=8, dropout_rate=0.0, head=dict(name="embedding"))
  target = source.replace(type_vocab_size=2)
  tokens = np.array([[1, 5, 6, 2, 7, 2, 0, 0]], np.int32)
  batch = {"tokens": tokens, "mask": tokens > 0, "type_ids": np.array([[0, 0, 0, 0, 1, 1, 0, 0]])}
  pretrained = jax.jit(lambda: nn.unbox(Model(source).init(jax.random.PRNGKey(0), batch)))()
  fresh = jax.jit(lambda: nn.unbox(Model(target).init(jax.random.PRNGKey(1), batch)))()
  pretrained, fresh = pretrained["params"], fresh["params"]
  state = TrainState(step=0, params=fresh, opt_state=(), rng=0, first_nonfinite_step=-1,
                     skipped_steps=0)
  shardings = TrainState(step=None, params=jax.tree.map(lambda _: None, fresh), opt_state=(),
                         rng=None, first_nonfinite_step=None, skipped_steps=None)
  place = init_from._place_encoder  # pylint: disable=protected-access
  placed = place(state, pretrained["encoder"], shardings, "test").params
  assert not np.asarray(placed["encoder"]["type_embed"]["embedding"]).any()
  run = jax.jit(lambda c, p: Model(c).apply({"params": p}, batch)[0], static_argnums=0)
  np.testing.assert_allclose(run(target, placed), run(source, pretrained), atol=1e-6)


def _pretrain(name: str, tmp_path) -> str:
  """A few steps of configs/<name>.py:tiny on a sliver of the offline corpus; its workdir."""
  import importlib  # pylint: disable=import-outside-toplevel

  from experiments.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(f"configs.{name}").get_config("tiny")
  config.data.cache_dir = str(tmp_path / "cache")
  config.data.text.update(max_bytes=300_000, eval_fraction=0.2, seq_len=128,
                          max_eval_examples=16)
  config.train.update(batch_size=4, num_steps=2, warmup_steps=1, log_every=1, eval_every=2,
                      checkpoint_every=2, async_checkpoints=False)
  config.eval.max_batches = 1
  config.progress_bar = False
  workdir = str(tmp_path / name)
  assert train_and_evaluate(config, workdir).status == "finished"
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("name, types", [("mlm", 0), ("modernbert", 0), ("modernbert", 2)])
def test_glue_fine_tunes_our_pretraining_run_on_mock_data(name, types, tmp_path):
  from configs import glue  # pylint: disable=import-outside-toplevel
  from experiments.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  run = _pretrain(name, tmp_path)
  config = glue.get_config(run)
  assert config.init_from.workdir == run and config.init_from.encoder_only
  assert config.model.type_vocab_size == 0 and config.data.glue.tokenizer == "bytes"
  config.model.type_vocab_size = types
  config.data.glue.update(task="mrpc", max_length=64)
  config.train.update(batch_size=4, num_steps=2, warmup_steps=1, log_every=1, eval_every=2,
                      checkpoint_every=2, async_checkpoints=False)
  config.progress_bar = False
  with tfds.testing.mock_data(num_examples=8):
    result = train_and_evaluate(config, str(tmp_path / "glue"))
  assert result.status == "finished", result.message
  assert np.isfinite(result.metrics["loss"]) and "f1" in result.metrics
