"""End-to-end runner tests: train_and_evaluate on tiny ListOps / MLM configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import listops_short, mlm
from experiments.metrics import read_jsonl
from experiments.train import train_and_evaluate
from tests.conftest import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def tiny_listops(cache_dir, **train):
  config = listops_short.get_config()
  config.data.cache_dir = str(cache_dir)
  config.data.listops.update(num_train=64, num_eval=32, min_length=8, max_length=32,
                             max_depth=3, max_args=4)
  config.model.update(dim=32, num_layers=1, num_heads=2, mlp_dim=64)
  config.train.update(batch_size=8, num_steps=6, warmup_steps=1, log_every=1, eval_every=3,
                      checkpoint_every=3, async_checkpoints=False)
  config.train.update(**train)
  config.eval.batch_size = 16
  config.progress_bar = False
  return config


def shrink_run(config, num_steps: int) -> None:
  """One block, batch 8, eval and checkpoint at the end only, synchronous saves."""
  config.model.update(num_layers=1)
  config.train.update(batch_size=8, num_steps=num_steps, warmup_steps=1, log_every=1,
                      eval_every=num_steps, checkpoint_every=num_steps, async_checkpoints=False)
  config.eval.batch_size = 16
  config.progress_bar = False


def records(workdir, split):
  return {r["step"]: r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if r["split"] == split}


def restore_params(workdir, step):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    return manager.restore(step, args=ocp.args.StandardRestore())["params"]


def test_listops_run_writes_workdir(tmp_path):
  workdir = tmp_path / "run"
  metrics = train_and_evaluate(tiny_listops(tmp_path / "cache"), str(workdir)).metrics
  assert {"loss", "accuracy"} <= set(metrics) and 0.0 <= metrics["accuracy"] <= 1.0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert json.loads((workdir / "config.json").read_text())["model"]["dim"] == 32
  assert os.listdir(workdir / "tensorboard")
  train = records(workdir, "train")
  assert sorted(train) == [1, 2, 3, 4, 5, 6]
  assert sorted(records(workdir, "eval")) == [3, 6]
  assert all(np.isfinite(r["loss"]) for r in train.values())


def test_loss_decreases_when_overfitting_a_tiny_set(tmp_path):
  config = tiny_listops(tmp_path / "cache", num_steps=120, learning_rate=3e-3, warmup_steps=10,
                        log_every=10, eval_every=120, checkpoint_every=120)
  config.data.listops.update(num_train=16)
  config.model.update(dim=64, num_layers=2, dropout_rate=0.0)
  train_and_evaluate(config, str(tmp_path / "run"))
  train = records(tmp_path / "run", "train")
  assert train[120]["loss"] < 0.2 * train[10]["loss"]
  assert train[120]["accuracy"] == 1.0


def test_resume_continues_exactly(tmp_path):
  """6 steps in one go == 3 steps, stop (checkpoint at 3), re-run the same workdir."""
  cache = tmp_path / "cache"
  whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
  train_and_evaluate(tiny_listops(cache), whole)
  stopped = train_and_evaluate(tiny_listops(cache, steps_per_run=3), resumed)
  assert (stopped.status, stopped.step, stopped.metrics) == ("steps_per_run", 3, {})
  assert sorted(records(resumed, "train")) == [1, 2, 3]
  result = train_and_evaluate(tiny_listops(cache), resumed)
  assert (result.status, result.step) == ("finished", 6)
  final = result.metrics
  statuses = [r["status"] for r in read_jsonl(os.path.join(resumed, "metrics.jsonl"))
              if "status" in r]
  assert statuses == ["finished"]  # the stopped invocation's record was replaced
  for split in ("train", "eval"):
    a, b = records(whole, split), records(resumed, split)
    assert sorted(a) == sorted(b)
    for step in a:
      for key in ("loss", "accuracy", "grad_norm"):
        if key in a[step]:
          assert a[step][key] == b[step][key], (split, step, key)
  assert final["loss"] == records(whole, "eval")[6]["loss"]
  import jax  # pylint: disable=import-outside-toplevel
  jax.tree.map(np.testing.assert_array_equal, restore_params(whole, 6),
               restore_params(resumed, 6))


def test_mlm_run(tmp_path):
  config = mlm.get_config("tiny")
  config.data.text.update(max_bytes=2_000_000, seq_len=32, max_eval_examples=32)
  shrink_run(config, num_steps=4)
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))
  assert metrics["loss"] < np.log(260) + 0.5  # starts near uniform over the byte vocabulary


def test_data_parallel_on_8_devices_matches_one_device(tmp_path):
  """Same config on 1 device and on an 8-device data-parallel mesh -> same losses."""
  script = (
      "import sys, json; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
      "from tests.test_train import tiny_listops\n"
      "from experiments.train import train_and_evaluate\n"
      "import jax; print(json.dumps({'devices': jax.device_count(), "
      "'eval': train_and_evaluate(tiny_listops(%r), sys.argv[1]).metrics}))\n"
  ) % (REPO, os.path.join(REPO, "tests"), str(tmp_path / "cache"))
  results = {}
  for devices in (1, 8):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"d{devices}")],
                         env=env, capture_output=True, text=True, check=True, cwd=REPO)
    results[devices] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results[devices]["devices"] == devices
  one, eight = records(tmp_path / "d1", "train"), records(tmp_path / "d8", "train")
  for step in one:
    np.testing.assert_allclose(one[step]["loss"], eight[step]["loss"], rtol=2e-5)
  np.testing.assert_allclose(results[1]["eval"]["loss"], results[8]["eval"]["loss"], rtol=2e-5)


def test_tfds_classification_run_on_mock_data(tmp_path):
  """The TFDS path end to end (ArrayRecord data source, no TensorFlow, no network)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from configs import tfds_text  # pylint: disable=import-outside-toplevel
  config = tfds_text.get_config("tiny")
  config.data.tfds.update(max_length=32, max_train=64, max_eval=32)
  shrink_run(config, num_steps=2)
  with tfds.testing.mock_data(num_examples=64):
    metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])


def test_bfloat16_compute_trains(tmp_path):
  config = tiny_listops(tmp_path / "cache", num_steps=2)
  config.model.dtype = "bfloat16"
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert np.isfinite(metrics["loss"])
