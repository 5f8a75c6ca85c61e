"""The benchmark package (experiments/bench/) at tiny sizes: the shared measurement (measure.py)
and reporting (report.py), every benchmark's quick config end to end into a temp workdir, the
CLI once in a subprocess, and no absl flags defined by importing any of it."""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from configs.bench import attention as attention_config
from encoders import registry
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments import bench
from experiments.bench import attention as attention_bench
from experiments.bench import measure, peers, report, synthetic, train_step

MODULES = [f"experiments.bench.{name}"
           for name in (*bench.BENCHMARKS, "measure", "report", "synthetic")]


def quick(name: str, **overrides):
  config = importlib.import_module(f"configs.bench.{name}").get_config("quick")
  config.update(**overrides)
  return config


def read_csv(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_importing_the_benchmarks_defines_no_flags():
  for module in MODULES:
    importlib.import_module(module)
  defined = [m for m in flags.FLAGS.flags_by_module_dict()
             if m == "experiments.bench" or m.startswith("experiments.bench.")]
  assert not defined


def test_every_benchmark_has_a_quick_config_naming_it():
  for name in bench.BENCHMARKS:
    assert quick(name).benchmark == name
  with pytest.raises(ConfigError, match="benchmark='nope'; allowed: attention, train_step"):
    bench.run(quick("attention", benchmark="nope"), "/nonexistent")


@pytest.mark.slow
def test_cli_runs_the_quick_attention_bench_and_reports_config_errors(tmp_path):
  command = [sys.executable, "-m", "experiments.bench", "--config",
             "configs/bench/attention.py:quick", "--workdir", str(tmp_path)]
  env = {**os.environ, "PYTHONPATH": os.getcwd()}
  done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
  assert done.returncode == 0, done.stderr
  assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "results.md",
                                                  "attention_vs_length.png"}
  bad = subprocess.run(command + ["--config.reference=nope"], capture_output=True, text=True,
                       env=env, timeout=600)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: reference='nope' is not a registered attention; allowed: " +
      ", ".join(registry.names("attention"))]


def test_compiled_peak_memory_subtracts_donated_buffers():
  state, x = jnp.ones((256, 256)), jnp.ones((256, 256))
  plain = measure.compile_cell(lambda s, x: (s + x, x.sum()), (state, x), float("inf"))
  donated = measure.compile_cell(lambda s, x: (s + x, x.sum()), (state, x), float("inf"),
                                donate_state=True)
  assert donated["memory_mib"] == pytest.approx(plain["memory_mib"] - 0.25)  # 256 KiB aliased
  donated["call"]()
  donated["call"]()  # each call's new state is the next call's (donated) input
  over = measure.compile_cell(lambda s, x: s + x, (state, x), 1024)
  assert over["status"] == "oom" and "call" not in over and "over the" in over["note"]


def test_interleaved_timer_times_every_cell_and_records_failures():
  calls = []

  def failing():
    if len(calls) > 2:
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\nmore")

  rows = [{"variant": "a", "call": lambda: calls.append("a")},
          {"variant": "b", "call": lambda: (calls.append("b"), failing())},
          {"variant": "c", "status": "oom"}]
  measure.time_interleaved(rows, repeats=3, max_seconds=60)
  assert calls[:4] == ["a", "b", "a", "b"]  # warm-up, then every cell in turn
  a, b, c = rows
  assert a["status"] == "ok" and a["repeats"] == 3 and "call" not in a
  assert a["time_min_ms"] <= a["time_ms"] <= a["time_max_ms"]
  assert b["status"] == "oom" and b["note"] == "RuntimeError: RESOURCE_EXHAUSTED: out of memory"
  assert c == {"variant": "c", "status": "oom"}


def test_attention_bench_writes_results_with_dense_as_reference(tmp_path, capsys):
  config = quick("attention", variants=("dense", "linear", "not_a_variant"), repeats=1)
  rows = bench.run(config, str(tmp_path))
  assert "'not_a_variant' is not registered; skipped" in capsys.readouterr().out
  table = read_csv(tmp_path / "results.csv")
  assert [(r["variant"], int(r["length"])) for r in table] == [
      ("dense", 128), ("linear", 128), ("dense", 256), ("linear", 256)]
  for r in rows:
    assert r["status"] == "ok" and r["time_ms"] > 0 and r["memory_mib"] > 0 and r["gflops"] > 0
    if r["variant"] == "dense":
      assert r["time_ratio"] == r["memory_ratio"] == r["gflops_ratio"] == 1.0
  md = (tmp_path / "results.md").read_text()
  assert "| dense |" in md and "memory_analysis" in md and "not_a_variant" in md


def test_benches_write_each_length_as_measured_and_need_no_matplotlib(tmp_path, monkeypatch,
                                                                      capsys):
  """A bench stopped after its first length (a device's time limit) leaves that length's
  tables; without matplotlib the tables are written, the plot skipped with a note."""
  measured = attention_bench.measure_length

  def first_length_only(config, cells, length, *args):
    if length != config.lengths[0]:
      raise KeyboardInterrupt  # what a timeout's signal does to the process, at this point
    return measured(config, cells, length, *args)

  monkeypatch.setattr(attention_bench, "measure_length", first_length_only)
  with pytest.raises(KeyboardInterrupt):
    bench.run(quick("attention", repeats=1), str(tmp_path / "stopped"))
  assert [int(r["length"]) for r in read_csv(tmp_path / "stopped" / "results.csv")] == [128, 128]
  assert "| dense |" in (tmp_path / "stopped" / "results.md").read_text()
  monkeypatch.setattr(attention_bench, "measure_length", measured)
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
  bench.run(quick("attention", lengths=(128,), repeats=1), str(tmp_path / "no_plot"))
  assert {p.name for p in (tmp_path / "no_plot").iterdir()} == {"results.csv", "results.md"}
  assert "matplotlib is not installed; attention_vs_length.png not drawn" in capsys.readouterr().out


def test_attention_cells_over_the_limit_or_failing_are_recorded_not_raised(tmp_path):
  config = quick("attention", lengths=(128,), repeats=1, memory_limit_gb=1e-4)
  config.options = {"linear": {"no_such_option": 1}}
  rows = {r["variant"]: r for r in bench.run(config, str(tmp_path))}
  assert rows["dense"]["status"] == "oom" and rows["dense"]["memory_mib"] > 0
  assert rows["linear"]["status"] == "error" and "no_such_option" in rows["linear"]["note"]
  assert "out of memory" in (tmp_path / "results.md").read_text()
  with pytest.raises(ConfigError, match="reference='nope'"):
    bench.run(quick("attention", reference="nope"), str(tmp_path))


@pytest.mark.slow
def test_train_step_bench_has_every_column_with_mfu_and_ratios(tmp_path):
  rows = bench.run(quick("train_step", repeats=1), str(tmp_path))
  assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "results.md", "train_step.png"}
  table = read_csv(tmp_path / "results.csv")
  assert [r["variant"] for r in table] == ["dense", "dense, same work", "dense, bfloat16"]
  for r in table:
    # the roofline estimate is filled on a chip with known peak figures only, not on CPUs
    optional = {"note", "estimated_ms", "model_gflops"}
    missing = [k for k in train_step.FIELDS if k not in optional and r[k] in ("", None)]
    assert r["status"] == "ok" and not missing, (r["variant"], missing)
    assert 0 < float(r["mfu"]) < 1 and float(r["tokens_per_s"]) > 0
  by_name = {r["variant"]: r for r in rows}
  dense, same, bf16 = by_name["dense"], by_name["dense, same work"], by_name["dense, bfloat16"]
  assert all(dense[report.ratio_key(k)] == 1.0 for k in train_step.RATIOS)
  # Full-vocabulary logits at every position: more FLOPs than the masked positions only.
  assert same["predict"] == "all" and same["gflops_ratio"] > 1
  assert bf16["dtype"] == "bfloat16" and bf16["ceiling_gflops_per_s"] != dense[
      "ceiling_gflops_per_s"]
  md = (tmp_path / "results.md").read_text()
  assert "| dense, same work | 32 | all |" in md and "MFU" in md and "ceiling" in md
  with pytest.raises(ConfigError, match="predict='some'"):
    bench.run(quick("train_step", variants=(("dense", dict(predict="some")),)), str(tmp_path))


@pytest.mark.slow
def test_synthetic_mlm_masked_and_all_positions_give_the_same_loss():
  from encoders.model import Model  # pylint: disable=import-outside-toplevel
  config = quick("train_step")
  model = Model(ModelConfig.from_dict(train_step.model_dict(config, 32, {})))
  losses, params = [], None
  for predict in synthetic.PREDICT:
    task = synthetic.SyntheticMLM(config, 97, 5, predict)
    inputs, targets = task.prepare(task.batch(2, 32, 0), jax.random.PRNGKey(1), train=True)
    params = params or model.init(jax.random.PRNGKey(2), inputs)["params"]
    loss, count = task.metrics(model.apply({"params": params}, inputs)[0], targets)["loss"]
    assert float(count) == 2 * 5  # exactly P = 5 predicted positions per row
    losses.append(float(loss / count))
  assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.skipif(bool(peers.missing("pytorch") or peers.missing("flax")),
                    reason="needs the peers extra (torch, transformers 4.x)")
def test_both_peers_run_beside_ours(tmp_path):
  rows = bench.run(quick("peers", repeats=1), str(tmp_path))
  status = {r["row"].split(" (")[0]: r for r in rows}
  assert [status[row]["status"] for row in ("ours", "pytorch", "flax")] == ["ok"] * 3, rows
  assert status["pytorch"]["params"] == status["flax"]["params"] == status["ours"]["params"]


@pytest.mark.slow
def test_missing_peer_is_skipped_and_pytorch_runs_beside_ours(tmp_path, monkeypatch, capsys):
  real_missing = peers.missing
  monkeypatch.setattr(peers, "missing", lambda peer: (
      f"transformers not installed; {peers.INSTALL}" if peer == "flax" else real_missing(peer)))
  rows = bench.run(quick("peers", repeats=1), str(tmp_path))
  out = capsys.readouterr().out
  assert "peer 'flax' skipped: transformers not installed; pip install -e '.[peers]'" in out
  status = {r["row"].split(" (")[0]: r for r in rows}
  assert status["flax"]["status"] == "skipped"
  assert status["ours"]["status"] == status["ours, same work"]["status"] == "ok"
  assert "skipped" in (tmp_path / "results.md").read_text()
  if real_missing("pytorch"):  # torch or transformers not installed here: skipped as well
    assert status["pytorch"]["status"] == "skipped"
    return
  torch = status["pytorch"]
  assert torch["status"] == "ok" and "attention sdpa" in torch["note"]
  assert torch["params"] == status["ours"]["params"]  # the same BERT architecture
  assert torch["tokens_per_s_ratio"] == 1.0 and status["ours"]["tokens_per_s_ratio"] > 0


@pytest.mark.slow
def test_connections_bench_times_the_runners_step_per_depth(tmp_path):
  rows = bench.run(quick("connections"), str(tmp_path))
  assert [(r["depth"], r["variant"]) for r in rows] == [
      (1, "residual"), (1, "denseformer"), (2, "residual"), (2, "denseformer")]
  assert [r["added"] for r in rows] == [0, 2, 0, 5]  # DWA weights: L(L+3)/2
  for r in rows:
    assert r["status"] == "ok" and r["time_ms"] > 0 and r["compile_s"] > 0
    assert r["memory_mib"] > 0
  assert rows[0]["time_ratio"] == rows[0]["compile_s_ratio"] == rows[0]["memory_ratio"] == 1.0
  table = (tmp_path / "results.md").read_text()
  assert "| 2 | denseformer | " in table and "residual compile time vs depth 1: depth 2:" in table
  assert (tmp_path / "connections.png").exists()


def test_moe_bench_rows_relative_to_the_dense_ffn(tmp_path):
  config = quick("moe")
  megablox = ("moe dropless (megablox)", dict(name="moe", grouped_matmul="megablox"))
  config.variants = (*config.variants, megablox)
  rows = bench.run(config, str(tmp_path))
  assert rows[0]["time_ratio"] == 1.0 and rows[1]["time_ms"] > 0
  assert rows[1]["memory_mib"] > 0 and rows[1]["gflops"] > 0
  assert rows[2]["status"] == "skipped" and "interpret=True" in rows[2]["note"]  # CPU
  assert "moe dropless" in (tmp_path / "results.md").read_text()


def test_packing_bench_reports_padding_and_speed(tmp_path):
  rows = bench.run(quick("packing", cache_dir=str(tmp_path / "cache")), str(tmp_path / "out"))
  assert [(r["corpus"], r["method"]) for r in rows] == [
      ("stdlib .py, bytes", "first_fit"), ("stdlib .py, bytes", "best_fit"),
      ("ListOps, 32-128 tokens", "first_fit"), ("ListOps, 32-128 tokens", "best_fit")]
  for r in rows:
    assert r["padding_after"] < r["padding_before"] and r["examples_per_s"] > 0
  listops = rows[-1]
  assert listops["examples"] == 2000 and listops["examples_per_row"] > 1.5
  md = (tmp_path / "out" / "results.md").read_text()
  assert "| ListOps, 32-128 tokens | 129 | 2000 |" in md and "best_fit examples/s" in md


def test_study_tradeoff_table_groups_variants_by_attention(tmp_path):
  from experiments.bench import attention  # pylint: disable=import-outside-toplevel
  specs = {"a": {"name": "dense"}, "b": {"name": "local", "block_size": 32, "window": 1},
           "c": {"name": "dense"}}
  bench = attention_config.get_config("study")
  bench.update(lengths=(256,), repeats=1)
  table = attention.tradeoff(specs, bench, str(tmp_path))
  assert "| a, c | dense | 1.00x | 1.00x |" in table and "| b | local | " in table
  bench.repeats = 3
  assert attention.tradeoff(specs, bench, str(tmp_path)) == table  # reused, not re-measured
  with pytest.raises(ConfigError, match="'local' appears with different options"):
    attention.tradeoff({**specs, "d": {"name": "local", "block_size": 64}}, bench,
                       str(tmp_path / "other"))
  bench.lengths = (256, 512)
  with pytest.raises(ConfigError, match="takes one length"):
    attention.tradeoff(specs, bench, str(tmp_path / "other"))


def test_implementations_are_a_grid_axis_and_useful_flops_count_kept_pairs():
  config = quick("attention", variants=("dense", "local"),
                 implementations={"local": ("xla", "pallas_gpu")})
  assert attention_bench.labels(config, ["dense", "local"]) == ["dense", "local/xla",
                                                                 "local/pallas_gpu"]
  model = ModelConfig.from_dict(dict(vocab_size=1, max_length=37, dim=8, num_heads=2,
                                     num_layers=1, mlp_dim=1, attention=dict(
                                         name="local", block_size=4, window_tokens=5)))
  index = np.arange(37)
  window_pairs = 2 * np.sum(np.abs(index[:, None] - index[None, :]) <= 5)
  assert attention_bench.kept_pairs(model.build("attention"), 37, 2) == window_pairs
  dense = ModelConfig.from_dict(dict(vocab_size=1, max_length=37, dim=8, num_heads=2,
                                     num_layers=1, mlp_dim=1))
  assert attention_bench.kept_pairs(dense.build("attention"), 37, 2) == 2 * 37 * 37


def test_mixers_presets_run_every_token_mixer_beside_attention():
  """The `mixers` presets (docs/benchmarks.md's token-mixer rows) name registered variants and
  cover every mixer of encoders/mixers/."""
  mixers = {"fnet", "s4d", "s5", "mamba", "hyena"}
  attention = importlib.import_module("configs.bench.attention").get_config("mixers")
  assert mixers < set(attention.variants) <= set(registry.names("attention"))
  step = importlib.import_module("configs.bench.train_step").get_config("mixers")
  names = {dict(options).get("model", {}).get("attention", {}).get("name", "dense")
           for _, options in step.variants}
  assert mixers < names <= set(registry.names("attention"))


def test_hybrid_preset_builds_the_three_stacks():
  """The `hybrid` train-step preset: its models resolve, and only the hybrid has a pattern, one
  dense layer in three over the local model."""
  step = importlib.import_module("configs.bench.train_step").get_config("hybrid")
  train_step = importlib.import_module("experiments.bench.train_step")
  models = {label: ModelConfig.from_dict(train_step.model_dict(step, 512, dict(options).get(
      "model", {}))) for label, options in step.variants}
  assert models["dense"].layer_pattern == models["local"].layer_pattern == ()
  names = [entry["attention"]["name"] for entry in models["hybrid"].pattern_entries()]
  assert names == ["dense", "local", "local"]
  assert models["hybrid"].num_layers % len(names) == 0
