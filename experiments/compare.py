"""Comparison studies: a grid of config variants x seeds -> results.csv, results.md, plots.

    python -m experiments.compare --config configs/compare_attention.py --workdir runs/study

A study config names a base experiment config (`base`, "path[:preset]"), `overrides` applied
to every cell, and a `grid` of dotted config fields -> values; the grid field `variant` picks
named sets of overrides from `study.variants` (label -> {dotted field: value}), for variants
that differ in several fields (an MoE FFN and a DenseFormer connection in one study); a
variant's `base` replaces the study's base config, and "{workdir}"/"{seed}" placeholders in
string values name earlier cells, so one study can pretrain and then fine-tune. Every
cell (the cartesian product) trains in `<workdir>/cells/<name>/` through
`train_and_evaluate`, so a crashed cell resumes from its checkpoint and finished cells
(`result.json`) are skipped. A cell that stops early (SIGTERM, `train.steps_per_run`) gets no
`result.json`: the study stops after that cell has saved (exit 0), and the same command
resumes the cell and goes on. A cell stopped by a non-finite step is recorded with status
`nonfinite` and no final metrics, and `results.md` says so instead of showing numbers. Then:

- `results.csv`: one row per cell: varied fields, parameters, final and best eval metrics,
  train steps/s, tokens/s, compile seconds, FLOPs per step, peak memory (XLA's analyses);
- `results.md`: mean ± std over seeds, sorted by the primary metric (and any
  `study.extra_metrics`), plus a fairness check
  warning when parameter counts differ by more than `param_tolerance`;
- `eval_curves.png` (primary metric vs step per variant) and `pareto.png` (quality vs
  throughput);
- with `study.attention_bench_length` (e.g. 4096): the cells' attention layers timed at that
  length, fwd+bwd time and peak memory as ratios to dense (the attention benchmark), printed
  and appended to results.md, so a table shows both halves of the trade-off.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import os
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments import preemption
from experiments import workdir as workdir_lib
from experiments.bench import attention as bench_attention
from experiments.metrics import read_jsonl
from experiments.tasks import glue_metrics
from experiments.train import FINISHED, NONFINITE, train_and_evaluate

SEED_FIELDS = ("seed",)
VARIANT_FIELD = "variant"  # grid field naming entries of study.variants (label -> overrides)


def load_base_config(spec: str) -> ml_collections.ConfigDict:
  """`configs/x.py[:preset]` -> that file's get_config(preset)."""
  path, _, preset = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"study.base: config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(f"study_base_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """config.a.b.c = value; unknown fields are a one-line error."""
  *parents, leaf = dotted.split(".")
  node = config
  for name in parents:
    if name not in node:
      raise ConfigError(f"study field {dotted!r}: {name!r} is not a config field")
    node = node[name]
  variant_option = len(parents) == 2 and parents[0] == "model"  # checked by the registry
  if leaf not in node and not variant_option:
    raise ConfigError(f"study field {dotted!r}: {leaf!r} is not a config field")
  with node.unlocked():
    node[leaf] = value


def cells(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Cartesian product of the grid, in the grid's field order."""
  fields = list(grid)
  return [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]


def cell_name(cell: Mapping[str, Any]) -> str:
  parts = [f"{field.split('.')[-2] if field.endswith('.name') else field.split('.')[-1]}="
           f"{value}" for field, value in cell.items()]
  return re.sub(r"[^A-Za-z0-9_.=,-]", "_", ",".join(parts))


def variant_overrides(study: ml_collections.ConfigDict, label: str) -> dict[str, Any]:
  """The dotted overrides of the named variant `label` (grid field `variant`)."""
  variants = study.get("variants") or {}
  if label not in variants:
    raise ConfigError(f"study grid variant={label!r} is not in study.variants; valid: "
                      f"{', '.join(variants) or '(none defined)'}")
  overrides = variants[label]
  return overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides)


def _fill(value: Any, context: Mapping[str, Any]) -> Any:
  """`value` with "{workdir}" and "{<grid field>}" placeholders filled (strings, nested)."""
  if isinstance(value, str) and "{" in value:
    try:
      return value.format(**context)
    except (KeyError, IndexError) as error:
      raise ConfigError(f"study value {value!r}: unknown placeholder {error}; allowed: "
                        f"{', '.join(context)}") from None
  if isinstance(value, Mapping):
    return {k: _fill(v, context) for k, v in value.items()}
  return value


def cell_config(study: ml_collections.ConfigDict, cell: Mapping[str, Any], workdir: str = ""):
  """The cell's experiment config: its base (study.base, or a variant's `base`), the study's
  overrides, then the cell's grid values; "{workdir}" and "{seed}"-style placeholders in
  string values are filled, so a cell can start from an earlier cell's run
  (`init_from.workdir = "{workdir}/cells/variant=dense,seed={seed}"`)."""
  fields = dict(study.overrides.to_dict())
  for field, value in cell.items():
    fields.update(variant_overrides(study, value) if field == VARIANT_FIELD else {field: value})
  context = {"workdir": workdir, **{f.split(".")[-1]: v for f, v in cell.items()}}
  config = load_base_config(fields.pop("base", study.base))
  for field, value in fields.items():
    set_field(config, field, _fill(value, context))
  return config


def summarize_cell(cell: Mapping[str, Any], workdir: str, primary: str, mode: str,
                   status: str = FINISHED) -> dict[str, Any]:
  """One results.csv row from a cell's metrics.jsonl (NaN rates are skipped). A cell that did
  not finish (`status`) keeps its counts and rates but no final or best metrics."""
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  info = next((r for r in records if r["split"] == "info" and "num_params" in r), {})
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  rates = [r["steps_per_sec"] for r in train if r.get("steps_per_sec") == r.get("steps_per_sec")]
  tokens = [r["tokens_per_sec"] for r in train
            if r.get("tokens_per_sec") == r.get("tokens_per_sec")]
  pick = max if mode == "max" else min
  row = dict(cell)
  row.update(params=info.get("num_params"), flops_per_step=info.get("flops_per_step"),
             peak_memory_bytes=info.get("peak_memory_bytes"),
             compile_seconds=info.get("compile_seconds"),
             steps_per_sec=statistics.median(rates) if rates else None,
             tokens_per_sec=statistics.median(tokens) if tokens else None,
             steps=evals[-1]["step"] if evals else None)
  if row["flops_per_step"] and row["steps"]:  # training compute (experiments/costs.py)
    row["train_flops"] = row["flops_per_step"] * row["steps"]
  if evals:
    for key, value in evals[-1].items():
      if key not in ("step", "split"):
        row[f"final_{key}"] = value
    values = [r[primary] for r in evals if primary in r]  # absent in e.g. pretraining cells
    if values:
      row[f"best_{primary}"] = pick(values)
  for test in [r for r in records if r["split"] == "test"][-1:]:  # eval.select_best's record
    row.update({f"test_{k}": v for k, v in test.items() if k not in ("step", "split")})
  if status != FINISHED:
    row = {k: v for k, v in row.items() if not k.startswith(("final_", "best_"))}
  row["status"] = status
  return row


def recorded_row(result_path: str, num_steps: int) -> dict[str, Any] | None:
  """The cell's `result.json` row if the cell is done: finished all `num_steps` steps, or
  stopped by a non-finite step (deterministic: rerunning would stop there again). Rows of
  cells that stopped early are not done, whatever they say (studies run before statuses were
  recorded wrote `result.json` for preempted cells too): such a cell resumes."""
  if not os.path.exists(result_path):
    return None
  with open(result_path, encoding="utf-8") as f:
    row = json.load(f)
  status = row.setdefault("status", FINISHED)
  if status == NONFINITE or (status == FINISHED and (row.get("steps") or 0) >= num_steps):
    return row
  return None


def _mean_std(values: list[float]) -> str:
  if not values:
    return "–"
  mean = statistics.fmean(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{mean:.4g} ± {std:.2g}" if len(values) > 1 else f"{mean:.4g}"


def fairness(rows: list[dict[str, Any]], tolerance: float) -> str | None:
  """A warning when parameter counts differ by more than `tolerance` (relative)."""
  counts = [r["params"] for r in rows if r.get("params")]
  if not counts:
    return None
  low, high = min(counts), max(counts)
  if high / low - 1 > tolerance:
    return (f"fairness: parameter counts differ by {100 * (high / low - 1):.1f}% "
            f"({int(low):,} to {int(high):,}), more than the {100 * tolerance:.0f}% tolerance")
  return None


def write_results(study, rows: list[dict[str, Any]], workdir: str) -> str:
  """results.csv, results.md and the plots; returns the markdown table."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(os.path.join(workdir, "results.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)

  varied = [f for f in study.grid if f not in SEED_FIELDS]
  seed_fields = [f for f in study.grid if f in SEED_FIELDS]
  primary = f"final_{study.primary_metric}"
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(row[f] for f in varied), []).append(row)
  shown = [primary, f"best_{study.primary_metric}", "final_loss"]
  if any(f"test_{study.primary_metric}" in row for row in rows):  # eval.select_best's test
    shown.insert(2, f"test_{study.primary_metric}")
  shown += [f"final_{m}" for m in study.get("extra_metrics", ()) if f"final_{m}" not in shown]
  shown += ["params", "steps_per_sec", "tokens_per_sec", "peak_memory_bytes", "flops_per_step",
            "train_flops", "compile_seconds"]
  reverse = study.mode == "max"
  ordered = sorted(groups.items(), key=lambda kv: statistics.fmean(
      [r[primary] for r in kv[1] if r.get(primary) is not None] or [float("nan")]),
      reverse=reverse)
  stopped = any(r.get("status", FINISHED) != FINISHED for r in rows)
  header = varied + ["seeds"] + (["not finished"] if stopped else []) + shown
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key, members in ordered:
    done = [m for m in members if m.get("status", FINISHED) == FINISHED]
    cells_text = [_mean_std([m[c] for m in done if m.get(c) is not None]) for c in shown]
    notes = [", ".join(f"{f}={m[f]}" for f in seed_fields) + f": {m['status']}"
             for m in members if m not in done]
    lines.append("| " + " | ".join([str(k) for k in key] + [str(len(done))] +
                                   ([", ".join(notes) or "–"] if stopped else []) + cells_text)
                 + " |")
  warning = fairness(rows, study.param_tolerance)
  table = "\n".join(lines)
  if study.get("table") == "glue":  # GLUE's layout: a column per task, the GLUE score
    table += "\n\n" + glue_metrics.glue_table(rows, [f for f in varied
                                                     if f != "data.glue.task"])
  elif study.get("table"):  # e.g. LRA's layout: variants x tasks, with an average column
    table += "\n\n" + pivot_table(rows, **study.table.to_dict())
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(f"# {study.name}\n\nMean ± std over the seeds that finished; sorted by {primary} "
            f"({'higher' if reverse else 'lower'} is better).\n\n{table}\n")
    f.write(f"\n**Warning:** {warning}\n" if warning else "\nFairness: parameter counts within "
            f"{100 * study.param_tolerance:.0f}% of each other.\n")
  plot(study, groups, workdir)
  return table + (f"\n{warning}" if warning else "")


def _label(value: Any) -> str:
  """A grid value as a column name: a config path `configs/x/name.py[:preset]` -> `name`."""
  text = str(value)
  path = text.partition(":")[0]
  return os.path.splitext(os.path.basename(path))[0] if path.endswith(".py") else text


def pivot_table(rows: list[dict[str, Any]], *, rows_field: str, columns_field: str,
                metric: str, title: str = "", also_average_without: str = "") -> str:
  """One row per `rows_field` value, one column per `columns_field` value, each cell the mean ±
  std over seeds of `metric` (cells that did not finish are left out), and an `average` column:
  the unweighted mean over the columns of the per-column means, shown only for a row with
  every column. `also_average_without` (a column label) adds a second average that leaves that
  column out: LRA's Table 1 averages five tasks without Path-X, where every model failed;
  later papers average all six, a failed Path-X counted at chance (50%)."""
  row_keys = list(dict.fromkeys(r[rows_field] for r in rows))
  column_keys = list(dict.fromkeys(r[columns_field] for r in rows))
  labels = [_label(c) for c in column_keys]
  kept = [i for i, label in enumerate(labels) if label != also_average_without]
  extra = [f"average without {also_average_without}"] if len(kept) < len(labels) else []
  lines = [title] if title else []
  lines += ["| " + " | ".join([rows_field] + labels + ["average"] + extra) + " |",
            "|" + "---|" * (len(column_keys) + 2 + len(extra))]
  for key in row_keys:
    means, texts = [], []
    for column in column_keys:
      values = [r[metric] for r in rows if r[rows_field] == key and r[columns_field] == column
                and r.get(metric) is not None and r.get("status", FINISHED) == FINISHED]
      texts.append(_mean_std(values))
      means.append(statistics.fmean(values) if values else None)
    averages = [f"{statistics.fmean(means):.4g}" if None not in means else "–"]
    if extra:
      subset = [means[i] for i in kept]
      averages.append(f"{statistics.fmean(subset):.4g}" if None not in subset else "–")
    lines.append("| " + " | ".join([str(key)] + texts + averages) + " |")
  return "\n".join(lines)


def plot(study, groups, workdir: str) -> None:
  """eval_curves.png and pareto.png (matplotlib, Agg backend)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  metric = study.primary_metric
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, members in groups.items():
    curves: dict[int, list[float]] = {}
    for member in members:
      for r in read_jsonl(os.path.join(member["workdir"], "metrics.jsonl")):
        if r["split"] == "eval" and metric in r:
          curves.setdefault(r["step"], []).append(r[metric])
    steps = sorted(curves)
    ax.plot(steps, [statistics.fmean(curves[s]) for s in steps], marker="o",
            label=", ".join(map(str, key)) or "all")
  ax.set(xlabel="step", ylabel=f"eval {metric}", title=study.name)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "eval_curves.png"), dpi=120)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  for key, members in groups.items():
    xs = [m["tokens_per_sec"] for m in members if m.get("tokens_per_sec")]
    ys = [m[f"final_{metric}"] for m in members if m.get(f"final_{metric}") is not None]
    if xs and ys:
      ax.scatter(statistics.fmean(xs), statistics.fmean(ys), label=", ".join(map(str, key)))
  ax.set(xlabel="train tokens/s", ylabel=f"final eval {metric}", title="quality vs throughput")
  if ax.get_legend_handles_labels()[0]:  # (evaluation-only studies have no throughput)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "pareto.png"), dpi=120)
  plt.close(fig)


def run_study(study: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]] | None:
  """Runs (or resumes) every cell, then writes the results; returns the rows, or None when a
  cell stopped early (SIGTERM or `train.steps_per_run`): it saved a checkpoint, and running
  the study again resumes it."""
  if study.mode not in ("max", "min"):
    raise ConfigError(f"study.mode={study.mode!r}; allowed: max, min")
  if not study.grid:
    raise ConfigError("study.grid is empty; name at least one field and its values")
  grid = {k: list(v) for k, v in study.grid.items()}
  all_cells = cells(grid)
  configs = [cell_config(study, cell, workdir) for cell in all_cells]  # all valid before any run
  with workdir_lib.exclusive(workdir), preemption.PreemptionWatch(enabled=True):
    return _run_cells(study, all_cells, configs, workdir)


def _run_cells(study, all_cells, configs, workdir: str) -> list[dict[str, Any]] | None:
  """`run_study`'s loop over the cells (under the workdir lock and the SIGTERM watch)."""
  rows = []
  for index, (cell, config) in enumerate(zip(all_cells, configs), 1):
    name = cell_name(cell)
    cell_dir = os.path.join(workdir, "cells", name)
    result_path = os.path.join(cell_dir, "result.json")
    row = recorded_row(result_path, config.train.num_steps)
    if row is not None:
      print(f"[{index}/{len(all_cells)}] {name}: {row['status']}, skipped", flush=True)
    else:
      if preemption.requested():  # SIGTERM between cells
        print("SIGTERM: stopping the study; run the same command again to continue",
              flush=True)
        return None
      print(f"[{index}/{len(all_cells)}] {name}", flush=True)
      result = train_and_evaluate(config, cell_dir)
      if not result.finished and result.status != NONFINITE:
        print(f"[{index}/{len(all_cells)}] {name}: stopped ({result.status}) at step "
              f"{result.step} with a checkpoint saved; run the same command again to "
              "continue the study", flush=True)
        return None
      if result.status == NONFINITE:
        print(f"[{index}/{len(all_cells)}] {name}: {result.message}", flush=True)
      row = summarize_cell(cell, cell_dir, study.primary_metric, study.mode, result.status)
      with open(result_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(row, f)
      os.replace(result_path + ".tmp", result_path)
    rows.append({**row, "workdir": cell_dir})
  table = write_results(study, rows, workdir)
  print(table, flush=True)
  if study.get("attention_bench_length"):
    print("\n" + attention_tradeoff(study, all_cells, configs, workdir), flush=True)
  return rows


def attention_tradeoff(study, all_cells, configs, workdir: str) -> str:
  """The other half of a quality table: the cells' attention layers timed at
  `study.attention_bench_length` tokens (experiments/bench/attention.py), appended to
  results.md."""
  specs = {}
  for cell, config in zip(all_cells, configs):
    label = ",".join(str(v) for f, v in cell.items() if f not in SEED_FIELDS) or "all"
    attention = config.model.attention
    specs[label] = attention.to_dict() if hasattr(attention, "to_dict") else dict(attention)
  table = bench_attention.tradeoff(specs, study.attention_bench_length,
                                   os.path.join(workdir, "attention_bench"))
  with open(os.path.join(workdir, "results.md"), "a", encoding="utf-8") as f:
    f.write(f"\n{table}\n")
  return table


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    run_study(flags.FLAGS.config, flags.FLAGS.workdir)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":  # flags defined here so that importing this module defines none
  config_flags.DEFINE_config_file("config", None, "Study config file.")
  flags.DEFINE_string("workdir", None, "Directory for cells and results.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
