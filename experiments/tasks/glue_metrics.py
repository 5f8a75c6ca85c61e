"""GLUE's official metrics (Wang et al. 2019, Table 1), its task scores, and the results table
in the GLUE paper's layout. Pure numpy.

CoLA: Matthews correlation; MRPC and QQP: F1 of the positive class and accuracy; STS-B:
Pearson and Spearman correlation; MNLI: accuracy on the matched and mismatched validation sets;
the others: accuracy. A task's score is the mean of its metrics (MRPC: (F1 + acc) / 2, STS-B:
(Pearson + Spearman) / 2, MNLI: (m + mm) / 2), and the GLUE score is the mean of the task
scores, as the GLUE paper computes it ("for tasks with multiple metrics, we use an unweighted
average of the metrics as the score for the task"). Values are in percent, as GLUE reports.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

# GLUE's column order and headers, and the metrics each column shows ("a/b" for two).
COLUMNS = (("cola", "CoLA", ("matthews",)), ("sst2", "SST-2", ("accuracy",)),
           ("mrpc", "MRPC", ("f1", "accuracy")), ("stsb", "STS-B", ("pearson", "spearman")),
           ("qqp", "QQP", ("f1", "accuracy")),
           ("mnli", "MNLI-m/mm", ("accuracy_matched", "accuracy_mismatched")),
           ("qnli", "QNLI", ("accuracy",)), ("rte", "RTE", ("accuracy",)),
           ("wnli", "WNLI", ("accuracy",)))
METRICS = {name: metrics for name, _, metrics in COLUMNS}


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
  """F1 of class 1 (MRPC: paraphrase, QQP: duplicate); 0 when nothing is predicted or true."""
  tp = np.sum((predictions == 1) & (labels == 1))
  fp, fn = np.sum((predictions == 1) & (labels != 1)), np.sum((predictions != 1) & (labels == 1))
  return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation of binary predictions (Matthews 1975); 0 when a margin is empty."""
  p, t = predictions == 1, labels == 1
  tp, tn = float(np.sum(p & t)), float(np.sum(~p & ~t))
  fp, fn = float(np.sum(p & ~t)), float(np.sum(~p & t))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  x, y = np.asarray(x, np.float64) - np.mean(x), np.asarray(y, np.float64) - np.mean(y)
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denominator) if denominator else 0.0


def ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, ties sharing their mean rank."""
  x = np.asarray(x)
  order = np.argsort(x, kind="stable")
  ordinal = np.empty(len(x), np.float64)
  ordinal[order] = np.arange(1, len(x) + 1)
  _, inverse = np.unique(x, return_inverse=True)
  return np.bincount(inverse, ordinal)[inverse] / np.bincount(inverse)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  return pearson(ranks(x), ranks(y))


def task_metrics(task: str, predictions: np.ndarray, labels: np.ndarray,
                 groups: np.ndarray) -> dict[str, float]:
  """The task's official metrics (percent) and its `score`; `groups` marks the eval split of
  each example (MNLI: 0 matched, 1 mismatched)."""
  def by_split(fn, index):
    keep = groups == index
    return 100 * fn(predictions[keep], labels[keep])

  table = {"matthews": lambda: 100 * matthews(predictions, labels),
           "accuracy": lambda: 100 * accuracy(predictions, labels),
           "f1": lambda: 100 * f1(predictions, labels),
           "pearson": lambda: 100 * pearson(predictions, labels),
           "spearman": lambda: 100 * spearman(predictions, labels),
           "accuracy_matched": lambda: by_split(accuracy, 0),
           "accuracy_mismatched": lambda: by_split(accuracy, 1)}
  out = {name: table[name]() for name in METRICS[task]}
  return {**out, "score": statistics.fmean(out.values())}


def glue_table(rows: Sequence[Mapping], label_fields: Sequence[str]) -> str:
  """Markdown in the GLUE paper's layout: one row per model (`label_fields` of the study's
  grid), one column per task ("a/b" for two metrics, mean over seeds), and the GLUE score:
  the mean of the task scores, over the tasks every model has."""
  models: dict[tuple, dict[str, list[Mapping]]] = {}
  for row in rows:
    if row.get("final_score") is None:
      continue
    key = tuple(row.get(f) for f in label_fields)
    models.setdefault(key, {}).setdefault(row["data.glue.task"], []).append(row)
  present = [c for c in COLUMNS if any(c[0] in tasks for tasks in models.values())]
  header = [*label_fields, *(title for _, title, _ in present), "GLUE"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key, tasks in models.items():
    cells, scores = [], []
    for name, _, metrics in present:
      runs = tasks.get(name, [])
      if not runs:
        cells.append("–")
        continue
      cells.append("/".join(f"{statistics.fmean(r[f'final_{m}'] for r in runs):.1f}"
                            for m in metrics))
      scores.append(statistics.fmean(r["final_score"] for r in runs))
    glue = f"{statistics.fmean(scores):.1f}" if len(scores) == len(present) else "–"
    lines.append("| " + " | ".join([*map(str, key), *cells, glue]) + " |")
  return "\n".join(lines)
