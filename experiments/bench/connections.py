"""Cross-layer connections: parameters, train-step time, memory and compile time vs depth.

    python -m experiments.bench --config configs/bench/connections.py \
        --workdir runs/bench/connections

For every depth and connection (encoders/connections.py) one whole classification model is
built and the runner's own train step timed (experiments/bench/synthetic.py: `make_train_step`
with the runner's AdamW and clipping over the classification task's loss, on a random batch),
so the figures describe what users train:

- parameters: the count, and what the connection adds to the reference model of that depth;
- compile time: trace + lower + XLA compile of the train step, after one throwaway compile so
  that no variant pays the process's one-time costs;
- step time and XLA's peak memory: experiments/bench/measure.py's interleaved timer and compiled
  figures, the variants of a depth timed in turn.

Everything is also given as a ratio to `reference` (residual with scanned blocks, the default)
at the same depth, measured in the same run; `residual (loop)` (scan_layers=False) separates
the cost of unrolling the blocks, which every connection that reads earlier outputs pays, from
the cost of the connection itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections

from experiments.bench import measure, report, synthetic

FIELDS = ("depth", "variant", "status", "params", "added", "added_pct", "compile_s", "time_ms",
          "time_min_ms", "time_max_ms", "repeats", "memory_mib", "gflops", "rss_mib",
          "time_ratio", "compile_s_ratio", "memory_ratio", "note")
RATIOS = ("time_ms", "compile_s", "memory_mib")
PLOT = report.Plot("connections.png", "depth", (
    ("time_ms", "train step (ms)", True), ("compile_s", "compile (s)", True),
    ("memory_mib", "XLA peak memory (MiB)", True)))


def classify_cell(config: ml_collections.ConfigDict, depth: int, overrides: Mapping) -> tuple:
  """(train step, (state, batch), parameter count) of the runner's classification step."""
  model = dict(vocab_size=config.vocab_size, max_length=config.length, dim=config.dim,
               num_layers=depth, num_heads=config.num_heads, mlp_dim=config.mlp_dim,
               dropout_rate=0.0, head=dict(name="classification", num_classes=config.num_classes),
               **overrides)
  task = synthetic.SyntheticClassify(config, config.vocab_size, config.num_classes)
  return synthetic.runner_step(config, model, task, config.length)


def measure_depth(config: ml_collections.ConfigDict, depth: int,
                  limit_bytes: float) -> list[dict]:
  """Compiles every variant at `depth`, then times them interleaved; one row each."""
  rows = []
  for label, overrides in config.variants:
    row = {"depth": depth, "variant": label}
    try:
      fn, args, row["params"] = classify_cell(config, depth, dict(overrides))
      row.update(measure.compile_cell(fn, args, limit_bytes, donate_state=True))
    except Exception as error:  # pylint: disable=broad-except
      row.update(measure.error_row(error))
    rows.append(row)
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  reference = next((r for r in rows if r["variant"] == config.reference and "params" in r), None)
  for row in rows:
    if reference is not None and "params" in row:
      row["added"] = row["params"] - reference["params"]
      row["added_pct"] = 100 * row["added"] / reference["params"]
  return rows


def markdown(rows: list[dict], config: ml_collections.ConfigDict) -> str:
  """The table, then the reference's compile time at each depth relative to the first depth."""
  lines = [f"{report.device_line()}; classification model of width {config.dim}, "
           f"{config.num_heads} heads, MLP {config.mlp_dim}; batch {config.batch_size} x "
           f"{config.length} tokens; the runner's train step (forward, backward, clipped AdamW). "
           f"Time: {report.timing(config.repeats)}. Peak memory: "
           f"{measure.PEAK_MEMORY}. Ratios to {config.reference} at the same depth.", "",
           f"| depth | connection | params | added | step ms [min-max] | step / {config.reference} "
           f"| compile (s) | compile / {config.reference} | XLA peak MiB |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    params = f"{r['params']:,}" if "params" in r else "–"
    added = f"{r['added']:,} ({r['added_pct']:.3g}%)" if "added" in r else "–"
    step = (f"{r['time_ms']:.1f} [{r['time_min_ms']:.1f}-{r['time_max_ms']:.1f}]"
            if "time_ms" in r else r["status"])
    ratio = f"{r['time_ratio']:.2f}x" if "time_ratio" in r else "–"
    compile_s = f"{r['compile_s']:.2f}" if "compile_s" in r else "–"
    compile_ratio = f"{r['compile_s_ratio']:.2f}x" if "compile_s_ratio" in r else "–"
    memory = f"{r['memory_mib']:.0f}" if "memory_mib" in r else "–"
    lines.append(f"| {r['depth']} | {r['variant']} | {params} | {added} | {step} | {ratio} | "
                 f"{compile_s} | {compile_ratio} | {memory} |")
  reference = [r for r in rows if r["variant"] == config.reference and "compile_s" in r]
  scaling = ", ".join(f"depth {r['depth']}: {r['compile_s'] / reference[0]['compile_s']:.2f}x"
                      for r in reference[1:])
  if scaling:
    lines += ["", f"{config.reference} compile time vs depth {reference[0]['depth']}: {scaling}"]
  notes = report.notes(rows, "variant", "depth")
  return "\n".join(lines + ([""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> None:
  measure.check_positive(config, ("depths", "repeats", "batch_size", "length", "dim", "num_heads",
                                 "mlp_dim", "vocab_size", "num_classes"))
  measure.check_reference(config.reference, [entry[0] for entry in config.variants])


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every (depth, variant) train step; writes results.csv, results.md, connections.png."""
  check_config(config)
  reference = dict(config.variants)[config.reference]
  fn, args, _ = classify_cell(config, 1, dict(reference))  # pays the process's one-time costs
  measure.compile_cell(fn, args, float("inf"), donate_state=True)["call"]()
  limit = measure.memory_limit(config)
  rows = []
  for index, depth in enumerate(config.depths, 1):
    for row in measure_depth(config, depth, limit):
      rows.append(row)
      shown = f"{row['time_ms']:.1f} ms" if "time_ms" in row else row["status"]
      print(f"{row['variant']:>22} @ depth {depth:>3}: {shown}"
            + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)
    report.add_ratios(rows, config.reference, RATIOS, group="depth")
    report.write_results(workdir, rows, FIELDS, markdown(rows, config),
                         PLOT if index == len(config.depths) else None)  # as it goes
  return rows
