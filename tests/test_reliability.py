"""Reliability: exact resume after SIGKILL, SIGTERM preemption, unreadable checkpoints,
retention, model mismatch, non-finite steps, workdir safety, data cache integrity.

The kill/resume tests (marker `kill`) run the real CLI in subprocesses; run them alone with
`python -m pytest -m kill`.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from encoders.errors import ConfigError
from experiments import workdir as workdir_lib
from experiments.data import listops
from experiments.metrics import read_jsonl
from experiments.tasks.classify import ClassifyTask
from experiments.train import train_and_evaluate
from tests.test_train import records, tiny_listops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# Exact resume after SIGKILL (real CLI, subprocesses).

def cli(workdir: str, task: str, cache: str) -> list[str]:
  """A tiny but real run: 40 steps, a checkpoint every 5, async checkpointing."""
  common = ["--config.progress_bar=False", "--config.train.num_steps=40",
            "--config.train.checkpoint_every=5", "--config.train.log_every=1",
            "--config.train.eval_every=10", "--config.train.warmup_steps=2",
            "--config.train.batch_size=8", "--config.eval.batch_size=16",
            "--config.model.num_layers=1", "--config.model.dim=32", "--config.model.mlp_dim=64"]
  if task == "classify":
    specific = ["--config", "configs/listops_short.py", f"--config.data.cache_dir={cache}",
                "--config.data.listops.num_train=64", "--config.data.listops.num_eval=32",
                "--config.data.listops.min_length=8", "--config.data.listops.max_length=32"]
  else:
    specific = ["--config", "configs/mlm.py:tiny", "--config.data.text.max_bytes=2000000",
                "--config.data.text.seq_len=32", "--config.data.text.max_eval_examples=32"]
  return [sys.executable, "-m", "experiments.main", "--workdir", workdir] + specific + common


def train_steps_logged(workdir: str) -> int:
  try:
    steps = [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
             if r["split"] == "train"]
  except ValueError:
    return 0
  return max(steps, default=0)


def final_params(workdir: str):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    step = manager.latest_step()
    return step, manager.restore(step, args=ocp.args.StandardRestore())["params"]


def assert_same_run(a: str, b: str) -> None:
  for split in ("train", "eval"):
    ra, rb = records(a, split), records(b, split)
    assert sorted(ra) == sorted(rb), split
    for step in ra:
      for key in ("loss", "accuracy", "grad_norm", "learning_rate", "perplexity"):
        assert ra[step].get(key) == rb[step].get(key), (split, step, key)
  (sa, pa), (sb, pb) = final_params(a), final_params(b)
  assert sa == sb == 40
  jax.tree.map(np.testing.assert_array_equal, pa, pb)


@pytest.mark.slow
@pytest.mark.kill
@pytest.mark.parametrize("task", ["classify", "mlm"])
def test_sigkill_then_rerun_is_bitwise_identical(tmp_path, task):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cache = str(tmp_path / "cache")
  whole = str(tmp_path / "whole")
  subprocess.run(cli(whole, task, cache), cwd=REPO, env=env, check=True, capture_output=True)
  kill_points = random.Random(f"{task}-kill").sample(range(7, 38), 3)
  for point in kill_points:
    workdir = str(tmp_path / f"killed_at_{point}")
    proc = subprocess.Popen(cli(workdir, task, cache), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while train_steps_logged(workdir) < point and proc.poll() is None:
      assert time.time() < deadline, "run did not reach the kill point"
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.listdir(os.path.join(workdir, "checkpoints")), point
    subprocess.run(cli(workdir, task, cache), cwd=REPO, env=env, check=True,
                   capture_output=True)
    assert_same_run(whole, workdir)


@pytest.mark.slow
@pytest.mark.kill
def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  workdir = str(tmp_path / "run")
  command = cli(workdir, "classify", str(tmp_path / "cache"))
  command[command.index("--config.train.num_steps=40")] = "--config.train.num_steps=5000"
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + 120
  while train_steps_logged(workdir) < 12:
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 0
  assert "SIGTERM: saved a checkpoint at step" in out
  saved = int(out.split("checkpoint at step ")[1].split(";")[0])
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    assert manager.latest_step() == saved >= 12
  assert saved < 5000


# ---------------------------------------------------------------------------------------------
# Checkpoint safety (in process).

@pytest.mark.slow
def test_unreadable_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
  cache = tmp_path / "cache"
  whole, damaged = str(tmp_path / "whole"), str(tmp_path / "damaged")
  train_and_evaluate(tiny_listops(cache, num_steps=9), whole)
  train_and_evaluate(tiny_listops(cache, num_steps=9, steps_per_run=6), damaged)
  data_dir = os.path.join(damaged, "checkpoints", "6", "default")
  for root, _, files in os.walk(data_dir):
    for name in files:
      if "ocdbt" in root or name == "manifest.ocdbt":
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(3)
  train_and_evaluate(tiny_listops(cache, num_steps=9), damaged)
  out = capsys.readouterr().out
  assert "checkpoints" in out and "6 is unreadable" in out
  assert os.path.isdir(os.path.join(damaged, "checkpoints_unreadable", "6"))
  for split in ("train", "eval"):
    a, b = records(whole, split), records(damaged, split)
    assert {s: r["loss"] for s, r in a.items()} == {s: r["loss"] for s, r in b.items()}


def test_keep_and_keep_period_are_honoured(tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny_listops(tmp_path / "cache", num_steps=10, checkpoint_every=1,
                                  keep_checkpoints=2, keep_period=4), workdir)
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [4, 8, 9, 10]


def test_checkpoint_of_another_model_is_refused_with_field_names(tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny_listops(tmp_path / "cache", num_steps=3), workdir)
  os.remove(os.path.join(workdir, "config.json"))  # only the checkpoint tells
  other = tiny_listops(tmp_path / "cache", num_steps=3)
  other.model.mlp_dim = 48
  with pytest.raises(ConfigError) as e:
    train_and_evaluate(other, workdir)
  message = str(e.value)
  assert "\n" not in message and "different model" in message
  assert "params/encoder/blocks/ffn/wi/kernel: checkpoint (1, 32, 64) vs model (1, 32, 48)" in (
      message)


# ---------------------------------------------------------------------------------------------
# Non-finite steps.

@pytest.fixture
def poisoned_step(monkeypatch):
  """Makes the loss of training step 5 (1-based) NaN through the example weights."""
  original_batch, original_prepare = ClassifyTask.train_batch, ClassifyTask.prepare

  def train_batch(self, step):
    batch = dict(original_batch(self, step))
    batch["poison"] = np.full(batch["labels"].shape, np.nan if step == 4 else 0.0, np.float32)
    return batch

  def prepare(self, batch, rng, train):
    inputs, targets = original_prepare(self, batch, rng, train)
    if "poison" in batch:
      targets = dict(targets, weights=targets["weights"] + batch["poison"])
    return inputs, targets

  monkeypatch.setattr(ClassifyTask, "train_batch", train_batch)
  monkeypatch.setattr(ClassifyTask, "prepare", prepare)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, poisoned_step):
  workdir = str(tmp_path / "run")
  config = tiny_listops(tmp_path / "cache", num_steps=8, checkpoint_every=2)
  result = train_and_evaluate(config, workdir)
  assert result.status == "nonfinite" and not result.metrics
  assert re.search(r"at step 5; .*Last good checkpoint: step 4", result.message)
  assert read_jsonl(os.path.join(workdir, "metrics.jsonl"))[-1]["status"] == "nonfinite"
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  _, params = final_params(workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nonfinite_loss_skip_policy_skips_that_batch(tmp_path, poisoned_step):
  workdir = str(tmp_path / "run")
  config = tiny_listops(tmp_path / "cache", num_steps=8, on_nonfinite="skip")
  metrics = train_and_evaluate(config, workdir).metrics
  assert np.isfinite(metrics["loss"])
  assert records(workdir, "train")[8]["skipped_steps"] == 1
  assert records(workdir, "train")[4]["skipped_steps"] == 0


# ---------------------------------------------------------------------------------------------
# Workdir safety and data integrity.

def test_different_config_is_refused_unless_overwrite(tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny_listops(tmp_path / "cache", num_steps=3), workdir)
  other = tiny_listops(tmp_path / "cache", num_steps=3, learning_rate=0.5)
  with pytest.raises(ConfigError, match=r"train.learning_rate: 0.001 -> 0.5.*--overwrite"):
    train_and_evaluate(other, workdir)
  assert sorted(records(workdir, "train")) == [1, 2, 3]
  before = records(workdir, "train")
  train_and_evaluate(other, workdir, overwrite=True)
  after = records(workdir, "train")
  assert sorted(after) == [1, 2, 3]  # the old run's records were cleared, not appended to
  assert after[3]["loss"] != before[3]["loss"]
  assert '"learning_rate": 0.5' in (tmp_path / "run" / "config.json").read_text()


@pytest.mark.slow
def test_busy_workdir_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
  """A second run on a workdir in use exits 2 with one line naming the holder; once the
  holder is SIGKILLed its lock is free (the kernel releases it)."""
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from experiments import workdir as w\n"
       "with w.exclusive(sys.argv[1]):\n  print('held', flush=True); time.sleep(600)", workdir],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    second = subprocess.run(cli(workdir, "classify", str(tmp_path / "cache")), cwd=REPO,
                            capture_output=True, text=True, env=dict(os.environ,
                                                                      JAX_PLATFORMS="cpu"))
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by another run (pid {holder.pid} on host" in lines[0]
    assert os.listdir(workdir) == ["lock"]  # nothing else was read or written
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
      with workdir_lib.exclusive(workdir):
        pass
  finally:
    holder.kill()
    holder.wait()
  with workdir_lib.exclusive(workdir):  # a dead holder's lock is taken over
    assert f"pid {os.getpid()} on host" in open(os.path.join(workdir, "lock")).read()


def test_half_written_listops_cache_is_regenerated(tmp_path):
  kwargs = dict(num_train=20, num_eval=5, seed=0, min_length=8, max_length=24, max_depth=3,
                max_args=4, cache_dir=tmp_path)
  first = listops.load_listops("train", **kwargs)
  (path,) = tmp_path.glob("listops_*.npz")
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  again = listops.load_listops("train", **kwargs)
  np.testing.assert_array_equal(first["inputs"], again["inputs"])
  assert path.read_bytes() == data


def test_token_ids_outside_the_vocabulary_are_reported(tmp_path):
  config = tiny_listops(tmp_path / "cache", num_steps=1)
  config.model.vocab_size = 10  # ListOps ids go up to 16
  with pytest.raises(ConfigError, match=r"token id 16 is outside the vocabulary \[0, 10\)"):
    train_and_evaluate(config, str(tmp_path / "run"))
