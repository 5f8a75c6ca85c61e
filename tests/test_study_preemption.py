"""Preemption-safe studies: a cell stopped early (SIGTERM, SIGKILL, `train.steps_per_run`) is
never recorded as finished; rerunning the study command resumes it, and the final results.csv
equals an uninterrupted study's (metrics, not timings).

The SIGTERM/SIGKILL test runs the real `experiments.compare` CLI in subprocesses (marker `kill`,
like the single-run kill tests).
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from experiments import study as studies
from experiments.metrics import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_COLUMNS = ("steps_per_sec", "tokens_per_sec", "compile_seconds")

STUDY = '''
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = "preemption"
  study.base = "configs/listops_short.py"
  study.overrides = ml_collections.ConfigDict({{
      "data.cache_dir": {cache!r}, "data.listops.num_train": 64, "data.listops.num_eval": 32,
      "data.listops.min_length": 8, "data.listops.max_length": 32, "model.dim": 32,
      "model.num_layers": 1, "model.mlp_dim": 64, "train.batch_size": 8,
      "train.num_steps": {steps}, "train.warmup_steps": 2, "train.log_every": 1,
      "train.eval_every": 6, "train.checkpoint_every": 4, "train.steps_per_run": {per_run},
      "eval.batch_size": 16, "progress_bar": False}}, allow_dotted_keys=True)
  study.grid = ml_collections.ConfigDict({{"model.ffn.name": ["mlp", "glu"], "seed": [0]}},
                                         allow_dotted_keys=True)
  study.variants = ml_collections.ConfigDict()
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 1.0
  return study
'''


def write_study(path, cache, steps: int, per_run: int = 0) -> str:
  path.write_text(STUDY.format(cache=str(cache), steps=steps, per_run=per_run))
  return str(path)


def command(study_file: str, workdir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.compare", "--config", study_file,
          "--workdir", workdir]


def steps_logged(workdir: str) -> int:
  """Train steps logged over all cells (a cell's records are cut back on resume)."""
  total = 0
  for cell in sorted(os.listdir(os.path.join(workdir, "cells"))) if os.path.isdir(
      os.path.join(workdir, "cells")) else []:
    try:
      records = read_jsonl(os.path.join(workdir, "cells", cell, "metrics.jsonl"))
    except ValueError:
      continue
    total += sum(r["split"] == "train" for r in records)
  return total


def results(workdir: str) -> list[dict[str, str]]:
  with open(os.path.join(workdir, "results.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.mark.slow
@pytest.mark.kill
def test_study_interrupted_by_sigterm_and_sigkill_ends_identical(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  study = write_study(tmp_path / "study.py", tmp_path / "cache", steps=16)
  whole = str(tmp_path / "whole")
  subprocess.run(command(study, whole), cwd=REPO, env=env, check=True, capture_output=True)
  expected = results(whole)
  assert [r["status"] for r in expected] == ["finished", "finished"]

  workdir = str(tmp_path / "interrupted")
  rng = random.Random("study-interruptions")
  signals = [signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]
  for sig in signals:
    before = steps_logged(workdir) if os.path.isdir(workdir) else 0
    point = before + rng.randint(2, 12)  # 1-16 steps into this invocation's cells
    proc = subprocess.Popen(command(study, workdir), cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while steps_logged(workdir) < point and proc.poll() is None:
      assert time.time() < deadline, "the study did not reach the interruption point"
      time.sleep(0.005)
    if proc.poll() is not None:  # finished before the point: nothing left to interrupt
      break
    sent = time.perf_counter()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
      assert proc.returncode == 0, out
      assert "run the same command again to continue" in out, out
      print(f"SIGTERM at step {point}: study exited 0 after "
            f"{time.perf_counter() - sent:.2f} s")
    # A stopped cell never has a result.json; a finished one always has.
    for cell in os.listdir(os.path.join(workdir, "cells")):
      result = os.path.join(workdir, "cells", cell, "result.json")
      if os.path.exists(result):
        with open(result, encoding="utf-8") as f:
          assert json.load(f)["steps"] == 16, cell
  for _ in range(3):  # reruns until the study is done
    done = subprocess.run(command(study, workdir), cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)
    if os.path.exists(os.path.join(workdir, "results.csv")):
      break
  assert "finished, skipped" in done.stdout
  assert _same_metrics(results(workdir), expected)


def _same_metrics(got, expected) -> bool:
  """Equal rows, but for the cell directories (different workdirs)."""
  def strip(rows):
    return [{k: v for k, v in r.items() if k != "workdir"} for r in rows]
  return strip(got) == strip(expected)


@pytest.mark.slow
def test_study_with_steps_per_run_needs_reruns_and_ends_identical(tmp_path, monkeypatch,
                                                                  capsys):
  monkeypatch.chdir(REPO)
  whole = studies.load_base_config(write_study(tmp_path / "whole.py", tmp_path / "cache", steps=10))
  studies.run_study(whole, str(tmp_path / "whole"))
  study = studies.load_base_config(write_study(tmp_path / "study.py", tmp_path / "cache", steps=10,
                                         per_run=4))
  workdir = str(tmp_path / "study")
  runs = 0
  while studies.run_study(study, workdir) is None:
    runs += 1
    assert runs < 10
  # Steps 0-4, 4-8 of the first cell; 8-10 finish it and 0-4 of the second; 4-8; then done.
  assert runs == 4
  assert "stopped (steps_per_run) at step 4" in capsys.readouterr().out
  assert _same_metrics(results(workdir), results(str(tmp_path / "whole")))


def test_result_of_a_cell_that_did_not_reach_num_steps_is_treated_as_unfinished(
    tmp_path, monkeypatch, capsys):
  """Studies run before statuses were recorded wrote result.json for preempted cells; a rerun
  resumes those cells instead of reporting their half-trained numbers."""
  monkeypatch.chdir(REPO)
  study = studies.load_base_config(write_study(tmp_path / "study.py", tmp_path / "cache", steps=8))
  workdir = str(tmp_path / "study")
  studies.run_study(study, workdir)
  expected = results(workdir)
  cell = os.path.join(workdir, "cells", os.listdir(os.path.join(workdir, "cells"))[0])
  with open(os.path.join(cell, "result.json"), encoding="utf-8") as f:
    row = json.load(f)
  row.pop("status")
  row.update(steps=6, final_accuracy=0.0)  # what the old bug wrote: a half-trained run
  with open(os.path.join(cell, "result.json"), "w", encoding="utf-8") as f:
    json.dump(row, f)
  capsys.readouterr()
  studies.run_study(study, workdir)
  assert capsys.readouterr().out.count("finished, skipped") == 1
  assert _same_metrics(results(workdir), expected)


@pytest.mark.slow
def test_nonfinite_cell_is_recorded_as_such_not_as_a_result(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  study = studies.load_base_config(write_study(tmp_path / "study.py", tmp_path / "cache", steps=6))
  study.overrides["train.learning_rate"] = float("nan")  # every update non-finite
  study.grid = ml_collections.ConfigDict({"model.ffn.name": ["mlp"], "seed": [0, 1]},
                                         allow_dotted_keys=True)
  workdir = str(tmp_path / "study")
  rows = studies.run_study(study, workdir)
  assert [r["status"] for r in rows] == ["nonfinite", "nonfinite"]
  assert not any(k.startswith(("final_", "best_")) for r in rows for k in r)
  markdown = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert "| mlp | 0 | seed=0: nonfinite, seed=1: nonfinite | – |" in markdown
  rows_again = studies.run_study(study, workdir)  # deterministic: not retried
  assert [r["status"] for r in rows_again] == ["nonfinite", "nonfinite"]
