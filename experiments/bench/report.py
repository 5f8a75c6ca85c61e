"""How every benchmark reports: ratios to the reference row measured in the same run, markdown
figures, and `write_results` (results.csv, results.md, a plot), called after every length or
depth measured, so a run stopped part way (a device's time limit) leaves the tables of what it
measured. Without matplotlib the tables are written and the plot is skipped with a note.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax

from experiments.bench.measure import cpu_threads


def ratio_key(key: str) -> str:
  """time_ms -> time_ratio, memory_mib -> memory_ratio, gflops -> gflops_ratio."""
  return key.removesuffix("_ms").removesuffix("_mib") + "_ratio"


def add_ratios(rows: list[dict], reference: str, keys: Sequence[str], *, label: str = "variant",
               group: str = "length") -> None:
  """`ratio_key(key)` = value / the reference row's value in the same group (same length)."""
  refs = {r[group]: r for r in rows if r[label] == reference}
  for r in rows:
    ref = refs.get(r[group], {})
    for key in keys:
      if r.get(key) is not None and ref.get(key):
        r[ratio_key(key)] = r[key] / ref[key]


def number(value: float, digits: str = ".4g") -> str:
  """A markdown figure: whole numbers from 1000 on, else `digits`."""
  return f"{value:.0f}" if abs(value) >= 1000 else f"{value:{digits}}"


def with_ratio(row: dict, key: str, digits: str = ".4g") -> str:
  """`value (ratio x)` of a markdown cell; `–` when the row has no such value."""
  if row.get(key) is None:
    return "–"
  ratio = row.get(ratio_key(key))
  return number(row[key], digits) + (f" ({ratio:.3g}x)" if ratio is not None else "")


def timing(repeats: int) -> str:
  """How the times of a table were taken (markdown)."""
  return f"median [min-max] of up to {repeats} interleaved rounds after one warm-up call each"


def device_line() -> str:
  """The first words of every results.md: where it was measured."""
  return (f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {cpu_threads()} "
          "cores)")


def notes(rows: Sequence[dict], *labels: str) -> list[str]:
  """`- <labels>: <note>` of every row with a note (errors, oom, versions)."""
  return [f"- {' @ '.join(str(r[k]) for k in labels)}: {r['note']}" for r in rows
          if r.get("note")]


class Plot(NamedTuple):
  """A figure of one panel per metric: (row key, title, log y axis), vs `x` (log2 axis)."""
  filename: str
  x: str
  metrics: tuple[tuple[str, str, bool], ...]


def write_results(workdir: str, rows: Sequence[dict], fields: Sequence[str], markdown: str,
                  plot: Plot | None = None) -> None:
  """results.csv (the `fields` columns, floats to 6 significant digits), results.md and the
  plot (one line per `variant`)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()}
                     for r in rows)
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown.rstrip("\n") + "\n")
  if plot is not None:
    draw(rows, plot, os.path.join(workdir, plot.filename))


def draw(rows: Sequence[dict], plot: Plot, path: str) -> None:
  """One panel per metric, one line per variant; log2 x axis. Without matplotlib: a note (the
  tables are written already)."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel  (optional: not on every machine)
  except ImportError:
    print(f"note: matplotlib is not installed; {os.path.basename(path)} not drawn (the tables "
          "are written)", flush=True)
    return
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  xs = sorted({r[plot.x] for r in rows})
  fig, axes = plt.subplots(1, len(plot.metrics), figsize=(5 * len(plot.metrics), 4),
                           squeeze=False)
  for ax, (key, title, log_y) in zip(axes[0], plot.metrics):
    for name in dict.fromkeys(r["variant"] for r in rows):
      points = [(r[plot.x], r[key]) for r in rows  # memory, FLOPs: also cells not run
                if r["variant"] == name and r.get(key) is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=plot.x, title=title, yscale="log" if log_y else "linear")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
  if axes[0][0].get_legend_handles_labels()[0]:
    axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
