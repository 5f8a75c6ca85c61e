"""A study's report, from its rows (experiments/study.py: one per cell):

- `results.csv`: one row per cell: varied fields, parameters, final and best eval metrics,
  train steps/s, tokens/s, compile seconds, FLOPs per step, peak memory (XLA's analyses);
- `results.md`: mean ± std over seeds, sorted by the primary metric (and any
  `study.extra_metrics`), cells that did not finish named with their status instead of numbers,
  a GLUE or pivot table where `study.table` asks for one, and a fairness check warning when
  parameter counts differ by more than `param_tolerance`;
- `eval_curves.png` (primary metric vs step per variant) and `pareto.png` (quality vs
  throughput), where matplotlib is installed.
"""

from __future__ import annotations

import csv
import os
import statistics
from typing import Any

from experiments.metrics import read_jsonl
from experiments.tasks import glue_metrics
from experiments.train import FINISHED

SEED_FIELDS = ("seed",)  # grid fields averaged over (the rest are what a row varies)


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
  """eval_curves.png and pareto.png (matplotlib, Agg backend); without matplotlib, a note."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("note: matplotlib is not installed; eval_curves.png and pareto.png not drawn",
          flush=True)
    return
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
