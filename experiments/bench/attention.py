"""Attention-layer benchmark: forward+backward time, peak memory and FLOPs vs sequence length.

    python -m experiments.bench --config configs/bench/attention.py --workdir runs/bench/attention

A cell is one (variant, length): the forward and backward pass (gradients of a scalar loss
w.r.t. parameters and input) of ONE registered attention layer, q/k/v/o projections included
(`attention_cell`; parameters and input drawn with numpy, normal). At each length every variant
is compiled once (experiments/bench/measure.py: XLA's FLOPs and peak memory; a cell over the
memory limit is recorded as out of memory, not run), then all are timed with the interleaved
timer. Any failure is recorded per cell; the bench never stops on one. Every value is also
given as a ratio to the `reference` variant (dense) at the same length, measured in the same
run. The workdir gets `results.csv`, `results.md` and `attention_vs_length.png`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from encoders import registry
from encoders.attention import implementation, sparse_variants
from encoders.attention.dense import DenseAttention
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments.bench import measure, report

METRICS = (("time_ms", "fwd+bwd time (ms)"), ("memory_mib", "peak memory (MiB)"),
           ("gflops", "GFLOPs per fwd+bwd"), ("tflops_per_s", "useful TFLOP/s"))
FIELDS = ("variant", "length", "status", "time_ms", "time_min_ms", "time_max_ms", "repeats",
          "memory_mib", "gflops", "useful_gflops", "tflops_per_s", "ceiling_fraction", "params",
          "compile_s", "time_ratio", "memory_ratio", "gflops_ratio", "tflops_per_s_ratio", "note")
PLOT = report.Plot("attention_vs_length.png", "length",
                   tuple((key, title, True) for key, title in METRICS))


def labels(config: ml_collections.ConfigDict, names: list[str]) -> list[str]:
  """Cell labels: `name`, or `name/implementation` for names in config.implementations."""
  return [f"{name}/{impl}" if name in config.implementations else name for name in names
          for impl in config.implementations.get(name, ("",))]


def attention_cell(config: ml_collections.ConfigDict, label: str,
                   length: int) -> tuple[Callable, tuple, int, float]:
  """(fwd+bwd function, its arguments, parameter count, useful GFLOPs) of one attention layer;
  `label`: a variant name, or `name/implementation`."""
  name, _, impl = label.partition("/")
  options = config.options.get(name)
  options = options.to_dict() if hasattr(options, "to_dict") else dict(options or {})
  if impl:
    options["implementation"] = impl
  model = ModelConfig.from_dict(dict(
      vocab_size=1, max_length=length, dim=config.num_heads * config.head_dim,
      num_heads=config.num_heads, head_dim=config.head_dim, num_layers=1, mlp_dim=1,
      dropout_rate=0.0, dtype=config.dtype, attention=dict(name=name, **options)))
  layer = model.build("attention")
  rng = np.random.default_rng(config.seed)
  x = jnp.asarray(rng.standard_normal((config.batch_size, length, model.dim)),
                  model.compute_dtype)
  # Drawn with numpy from the initialiser's shapes: time, memory and FLOPs do not depend on the
  # values, and compiling every variant's initialisers took longer than measuring the cell.
  shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.PRNGKey(0), x).get("params", {}))
  params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype),
                        shapes)

  def loss(params, x):
    return jnp.mean(layer.apply({"params": params}, x).astype(jnp.float32) ** 2)

  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return jax.grad(loss, argnums=(0, 1)), (params, x), num_params, useful_gflops(
      layer, config.batch_size, length, config.num_heads, config.head_dim)


def kept_pairs(layer, length: int, heads: int) -> float | None:
  """(query, key) pairs a dense or block-sparse layer computes, summed over heads (globals
  counted as full rows and columns); None for other variants (their FLOPs are XLA's)."""
  if isinstance(layer, DenseAttention):
    return float(heads * length * length)
  if not isinstance(layer, sparse_variants.BlockSparseAttention):
    return None
  layout, global_tokens = layer.layout(length, heads)
  layout = layout[None] if layout.ndim == 2 else layout
  bs, window = layer.block_size, layer.token_window()
  sizes = np.minimum(bs, length - np.arange(layout.shape[1]) * bs)  # tokens per block
  offsets = np.arange(bs)
  total = 0.0
  for rows in np.broadcast_to(layout, (heads, *layout.shape[1:])):
    for i, row in enumerate(rows):
      for j in row[row >= 0]:
        if window is None or abs(i - j) > -(-window // bs):
          total += sizes[i] * sizes[j]
        else:
          near = np.abs((i * bs + offsets)[:, None] - (j * bs + offsets)[None, :]) <= window
          total += near[:sizes[i], :sizes[j]].sum()
  return total + heads * 2.0 * len(global_tokens) * length


def useful_gflops(layer, batch: int, length: int, heads: int, head_dim: int) -> float | None:
  """Forward+backward GFLOPs of the work the layer must do: the four projections and QK^T, PV
  over the kept pairs (backward = 2x forward, no recomputation counted)."""
  pairs = kept_pairs(layer, length, heads)
  if pairs is None:
    return None
  dim = heads * head_dim
  forward = batch * (4 * 2 * length * dim * dim + 2 * 2 * pairs * head_dim)
  return 3 * forward / 1e9


def measure_length(config: ml_collections.ConfigDict, cells: list[str], length: int,
                   limit_bytes: float, ceiling: float) -> list[dict]:
  """Compiles every cell at `length`, then times them interleaved; one row each."""
  rows = []
  for label in cells:
    row = {"variant": label, "length": length}
    try:
      fn, args, row["params"], useful = attention_cell(config, label, length)
      row.update(measure.compile_cell(fn, args, limit_bytes))
      row["useful_gflops"] = row.get("gflops") if useful is None else useful
    except Exception as error:  # pylint: disable=broad-except
      row.update(measure.error_row(error))
    rows.append(row)
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  for row in rows:
    if row.get("time_ms") and row.get("useful_gflops"):
      row["tflops_per_s"] = row["useful_gflops"] / row["time_ms"]
      row["ceiling_fraction"] = row["tflops_per_s"] * 1e12 / ceiling
  return rows


def markdown(rows: list[dict], config: ml_collections.ConfigDict, skipped: list[str],
             ceiling: float) -> str:
  """One table per metric: variants x lengths, each cell `value (x reference)`."""
  lengths = sorted({r["length"] for r in rows})
  cell = {(r["variant"], r["length"]): r for r in rows}
  lines = [f"{report.device_line()}; {config.dtype}; batch {config.batch_size}, "
           f"{config.num_heads} heads x {config.head_dim}; one attention layer (projections "
           f"included), forward+backward. Each cell: value (x {config.reference} at the same "
           f"length). Time: {report.timing(config.repeats)}. Peak memory: "
           f"{measure.PEAK_MEMORY}. FLOPs: XLA cost_analysis. Useful TFLOP/s: projections and "
           "the kept attention pairs, forward and backward, per second (cell: value (x "
           f"reference)); same-run {config.dtype} matmul ceiling "
           f"{ceiling / 1e12:.3g} TFLOP/s.", ""]
  for key, title in METRICS:
    lines += [f"**{title}**", "", "| variant | " + " | ".join(str(n) for n in lengths) + " |",
              "|---|" + "---:|" * len(lengths)]
    for name in dict.fromkeys(r["variant"] for r in rows):
      values = []
      for n in lengths:
        r = cell.get((name, n), {})
        value = report.with_ratio(r, key)
        values.append(r.get("status", "–") if value == "–" else
                      value + ("" if r["status"] == "ok" else f" {r['status']}"))
      lines.append(f"| {name} | " + " | ".join(values) + " |")
    lines.append("")
  notes = report.notes(rows, "variant", "length")
  if skipped:
    notes.append(f"- not registered, skipped: {', '.join(skipped)}")
  return "\n".join(lines + (["Notes:", ""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> None:
  measure.check_positive(config, ("lengths", "repeats", "batch_size", "num_heads", "head_dim"))
  known = registry.names("attention")
  name = config.reference.partition("/")[0]
  if name not in known:
    raise ConfigError(f"reference={config.reference!r} is not a registered attention; "
                      f"allowed: {', '.join(known)}")
  for name, impls in config.implementations.items():
    for impl in impls:
      if impl not in implementation.IMPLEMENTATIONS:
        raise ConfigError(f"implementations.{name}={tuple(impls)!r}: {impl!r} is not an "
                          f"implementation; allowed: {', '.join(implementation.IMPLEMENTATIONS)}")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Measures every (registered variant, length); writes the three files; returns the rows."""
  check_config(config)
  known = registry.names("attention")
  reference = config.reference.partition("/")[0]
  variants = list(dict.fromkeys([reference, *config.variants]))
  skipped = [name for name in variants if name not in known]
  for name in skipped:
    print(f"note: attention {name!r} is not registered; skipped", flush=True)
  cells = labels(config, [v for v in variants if v not in skipped])
  measure.check_reference(config.reference, cells)
  cells.remove(config.reference)
  cells.insert(0, config.reference)
  limit = measure.memory_limit(config)
  ceiling = measure.matmul_ceiling(config.ceiling_size, config.dtype, config.ceiling_seconds)
  print(f"matmul ceiling ({config.dtype}, {config.ceiling_size}^3): {ceiling / 1e12:.3g} "
        "TFLOP/s", flush=True)
  rows = []
  for index, length in enumerate(config.lengths, 1):
    for row in measure_length(config, cells, length, limit, ceiling):
      rows.append(row)
      shown = f"{row['time_ms']:.1f} ms" if "time_ms" in row else row["status"]
      print(f"{row['variant']:>22} @ {length:>6}: {shown}, "
            f"{row.get('memory_mib', float('nan')):.0f} MiB"
            + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)
    report.add_ratios(rows, config.reference, [key for key, _ in METRICS])
    report.write_results(workdir, rows, FIELDS, markdown(rows, config, skipped, ceiling),
                         PLOT if index == len(config.lengths) else None)  # as it goes
  return rows


def tradeoff(specs: dict[str, dict], bench: ml_collections.ConfigDict, workdir: str) -> str:
  """A study's speed side: the attention layers of `specs` (label -> `model.attention` dict)
  at the one length of `bench` (this benchmark's settings, e.g. configs/bench/attention.py's
  `study` preset), fwd+bwd time and peak memory as ratios to dense, as a markdown table.

  Variants that share an attention spec share a row. The bench runs once per workdir (its
  results.csv is reused when a study is rerun).
  """
  if len(bench.lengths) != 1:
    raise ConfigError(f"study.attention_bench.lengths={tuple(bench.lengths)!r}: the trade-off "
                      "table takes one length")
  groups: dict[str, list[str]] = {}
  options: dict[str, dict] = {}
  for label, spec in specs.items():
    spec = dict(spec)
    name = spec.pop("name")
    if options.setdefault(name, spec) != spec:
      raise ConfigError(f"attention {name!r} appears with different options ({options[name]} "
                        f"and {spec}); the trade-off table takes one per name")
    groups.setdefault(name, []).append(label)
  config = ml_collections.ConfigDict(bench.to_dict())
  config.reference, config.implementations = "dense", {}
  config.variants = tuple(groups)
  config.options = {**config.options.to_dict(), **options}
  length = config.lengths[0]
  path = os.path.join(workdir, "results.csv")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  else:
    rows = run(config, workdir)
  lines = [f"Attention layer at {length} tokens ({config.num_heads} heads x {config.head_dim}, "
           f"batch {config.batch_size}, forward+backward; {report.device_line()}), ratio to "
           "dense measured in the same run:", "",
           "| variants | attention | fwd+bwd time | peak memory |", "|---|---|---:|---:|"]
  for row in rows:
    if row["variant"] not in groups:
      continue
    time_ratio, memory_ratio = (f"{float(row[k]):.2f}x" if row.get(k) not in (None, "") else
                                str(row.get("status")) for k in ("time_ratio", "memory_ratio"))
    lines.append(f"| {', '.join(groups[row['variant']])} | {row['variant']} | {time_ratio} | "
                 f"{memory_ratio} |")
  return "\n".join(lines)
