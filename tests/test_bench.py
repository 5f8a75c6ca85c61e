"""The attention benchmark at tiny lengths: files written, ratios to dense, per-cell failures."""

from __future__ import annotations

import csv

import pytest

from configs import bench_attention
from encoders.errors import ConfigError
from experiments import bench


def quick_config(**overrides):
  config = bench_attention.get_config("quick")
  config.update(repeats=1, **overrides)
  return config


def test_quick_bench_writes_results_with_dense_as_reference(tmp_path, capsys):
  config = quick_config(variants=("dense", "linear", "not_a_variant"))
  rows = bench.run(config, str(tmp_path))
  assert "'not_a_variant' is not registered; skipped" in capsys.readouterr().out
  assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "results.md",
                                                  "attention_vs_length.png"}
  with open(tmp_path / "results.csv", encoding="utf-8") as f:
    table = list(csv.DictReader(f))
  assert [(r["variant"], int(r["length"])) for r in table] == [
      ("dense", 128), ("linear", 128), ("dense", 256), ("linear", 256)]
  for r in rows:
    assert r["status"] == "ok" and r["time_ms"] > 0 and r["memory_mib"] > 0 and r["gflops"] > 0
    if r["variant"] == "dense":
      assert r["time_ratio"] == r["memory_ratio"] == r["gflops_ratio"] == 1.0
  md = (tmp_path / "results.md").read_text()
  assert "| dense |" in md and "memory_analysis" in md and "not_a_variant" in md


def test_cells_over_the_memory_limit_are_recorded_not_run(tmp_path):
  rows = bench.run(quick_config(lengths=(128,), memory_limit_gb=1e-4), str(tmp_path))
  assert {r["status"] for r in rows} == {"oom"}
  assert all("out of memory" in r["note"] and r["memory_mib"] > 0 for r in rows)
  assert "out of memory" in (tmp_path / "results.md").read_text()


def test_failing_cell_is_recorded_and_the_bench_goes_on(tmp_path):
  config = quick_config(lengths=(128,), variants=("dense", "linear"))
  config.options = {"linear": {"max_segments": 1, "no_such_option": 1}}
  rows = bench.run(config, str(tmp_path))
  status = {r["variant"]: r for r in rows}
  assert status["dense"]["status"] == "ok"
  assert status["linear"]["status"] == "error" and "no_such_option" in status["linear"]["note"]


def test_bad_reference_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="reference='nope'"):
    bench.run(quick_config(reference="nope"), str(tmp_path))
