"""The benchmarks at tiny sizes: attention layers (files written, ratios to dense, per-cell
failures), full train steps (every column, MFU, ratios) and the peer comparison (missing peers
skipped)."""

from __future__ import annotations

import csv

import jax
import pytest

from configs import bench_attention, bench_peer
from configs import bench_train as bench_train_config
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import bench, bench_train, peers


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


def quick_train_config(**overrides):
  config = bench_train_config.get_config("quick")
  config.update(**{"variants": config.variants[:3], "lengths": (32,), "repeats": 1, **overrides})
  return config


def test_train_step_bench_has_every_column_with_mfu_and_ratios(tmp_path):
  rows = bench.run(quick_train_config(), str(tmp_path))
  assert {p.name for p in tmp_path.iterdir()} == {"results.csv", "results.md", "train_step.png"}
  with open(tmp_path / "results.csv", encoding="utf-8") as f:
    table = list(csv.DictReader(f))
  assert [r["variant"] for r in table] == ["dense", "dense, same work", "dense, bfloat16"]
  for r in table:
    missing = [k for k in bench_train.FIELDS if k != "note" and r[k] in ("", None)]
    assert r["status"] == "ok" and not missing, (r["variant"], missing)
    assert 0 < float(r["mfu"]) < 1 and float(r["tokens_per_s"]) > 0
    assert float(r["time_min_ms"]) <= float(r["time_ms"]) <= float(r["time_max_ms"])
  by_name = {r["variant"]: r for r in rows}
  dense, same, bf16 = by_name["dense"], by_name["dense, same work"], by_name["dense, bfloat16"]
  assert all(dense[bench_train.ratio_key(k)] == 1.0 for k in bench_train.RATIOS)
  # Full-vocabulary logits at every position: more FLOPs than the masked positions only.
  assert same["predict"] == "all" and same["gflops_ratio"] > 1
  assert bf16["dtype"] == "bfloat16" and bf16["ceiling_gflops_per_s"] != dense[
      "ceiling_gflops_per_s"]
  md = (tmp_path / "results.md").read_text()
  assert "| dense, same work | 32 | all |" in md and "MFU" in md and "ceiling" in md


def test_synthetic_mlm_masked_and_all_positions_give_the_same_loss():
  config = quick_train_config()
  model = Model(ModelConfig.from_dict(bench_train.model_dict(config, 32, {})))
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 32), bench_train.FIRST_REGULAR_ID, 97)
  losses, params = [], None
  for predict in bench_train.PREDICT:
    task = bench_train.SyntheticMLM(config, 97, 5, predict)
    inputs, targets = task.prepare({"tokens": tokens}, jax.random.PRNGKey(1), train=True)
    params = params or model.init(jax.random.PRNGKey(2), inputs)["params"]
    loss, count = task.metrics(model.apply({"params": params}, inputs)[0], targets)["loss"]
    assert float(count) == 2 * 5  # exactly P = 5 predicted positions per row
    losses.append(float(loss / count))
  assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_train_bench_bad_variant_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="predict='some'"):
    bench.run(quick_train_config(variants=(("dense", dict(predict="some")),)), str(tmp_path))
  with pytest.raises(ConfigError, match="reference='nope'"):
    bench.run(quick_train_config(reference="nope"), str(tmp_path))


@pytest.mark.skipif(bool(peers.missing("pytorch") or peers.missing("flax")),
                    reason="needs the peers extra (torch, transformers 4.x)")
def test_both_peers_run_beside_ours(tmp_path):
  config = bench_peer.get_config("quick")
  config.repeats = 1
  rows = bench.run(config, str(tmp_path))
  status = {r["row"].split(" (")[0]: r for r in rows}
  assert [status[row]["status"] for row in ("ours", "pytorch", "flax")] == ["ok"] * 3, rows
  assert status["pytorch"]["params"] == status["flax"]["params"] == status["ours"]["params"]


def test_missing_peer_is_skipped_and_pytorch_runs_beside_ours(tmp_path, monkeypatch, capsys):
  real_missing = peers.missing
  monkeypatch.setattr(peers, "missing", lambda peer: (
      f"transformers not installed; {peers.INSTALL}" if peer == "flax" else real_missing(peer)))
  config = bench_peer.get_config("quick")
  config.repeats = 1
  rows = bench.run(config, str(tmp_path))
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
