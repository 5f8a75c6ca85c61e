"""A real multi-process run: 2 local processes x 4 CPU devices form one 8-device mesh
(jax.distributed on localhost, gloo collectives), train 5 steps with FSDP and save an Orbax
checkpoint; a single-process, 1-device run restores it (elastic restore) and evaluates."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments.metrics import read_jsonl
from experiments.tasks import make_task
from experiments.train import train_and_evaluate
from tests.conftest import FAST_COMPILE
from tests.test_scaling import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

CONFIG_FILE = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_scaling import tiny_run


def get_config():
  return tiny_run({cache!r}, mesh=(2, 4, 1, 1))
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_one_device_restores(tmp_path):
  cache, workdir = tmp_path / "cache", tmp_path / "run"
  make_task(tiny_run(cache))  # write the data cache once, before the processes read it
  config_file = tmp_path / "config.py"
  config_file.write_text(CONFIG_FILE.format(repo=REPO, cache=str(cache)))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}")
  address = f"127.0.0.1:{free_port()}"
  processes = [
      subprocess.Popen(
          [sys.executable, "-m", "experiments.main", f"--config={config_file}",
           f"--workdir={workdir}", f"--coordinator_address={address}", "--num_processes=2",
           f"--process_id={i}"],
          env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "final eval" in outputs[0][0] and "final eval" not in outputs[1][0]  # process 0 only

  records = read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5]  # one writer
  assert next(r for r in records if r["split"] == "info")["num_devices"] == 8
  assert "5" in os.listdir(workdir / "checkpoints")
  saved_eval = next(r for r in records if r["split"] == "eval")["loss"]

  restored = train_and_evaluate(tiny_run(cache), str(workdir)).metrics  # 1 device: restore + eval
  np.testing.assert_allclose(restored["loss"], saved_eval, rtol=1e-5)
