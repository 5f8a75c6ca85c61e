"""experiments/bench_model.py at tiny sizes: rows, ratios to residual, the markdown table."""

from __future__ import annotations

from experiments import bench_model


def test_bench_model_rows_and_table():
  variants = (bench_model.VARIANTS[0], ("denseformer", dict(connection=dict(name="denseformer"))))
  rows = bench_model.benchmark([1, 2], dim=16, heads=2, mlp_dim=16, length=8, batch=2,
                               repeats=1, variants=variants)
  assert [(r["depth"], r["variant"]) for r in rows] == [
      (1, "residual"), (1, "denseformer"), (2, "residual"), (2, "denseformer")]
  assert [r["added"] for r in rows] == [0, 2, 0, 5]  # DWA weights: L(L+3)/2
  for r in rows:
    assert r["step_ms"] > 0 and r["compile_s"] > 0
  assert rows[0]["step_ratio"] == rows[0]["compile_ratio"] == 1.0
  table = bench_model.markdown(rows)
  assert "| 2 | denseformer | " in table and "residual compile time vs depth 1: depth 2:" in table
