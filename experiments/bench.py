"""Efficiency benchmarks; the config's `benchmark` field picks one:

    python -m experiments.bench --config configs/bench_attention.py --workdir runs/bench_attention
    python -m experiments.bench --config configs/bench_train.py --workdir runs/bench_train
    python -m experiments.bench --config configs/bench_peer.py --workdir runs/bench_peer

`train` (experiments/bench_train.py) times full MLM train steps per variant and length, with
MFU; `peer` (experiments/peers.py) times our MLM train step against Hugging Face's PyTorch and
Flax BERT. `attention` (the default, this module) times one attention layer: a cell is one
(variant, length), the forward and backward pass of ONE registered attention layer
(`attention_cell`). Per cell:

- time: jit and compile once, one warm-up call, then the median of `repeats` calls, each
  waited for with `block_until_ready` (fewer repeats when they would exceed `max_seconds`);
- peak memory: temp + argument + output bytes of the compiled executable
  (`compiled.memory_analysis()`, XLA's own buffer assignment; works on CPU, unlike device
  memory stats), i.e. the memory the step needs, not the process RSS;
- FLOPs per forward+backward: `compiled.cost_analysis()["flops"]`; and the parameter count.

A cell whose compiled peak exceeds `memory_limit_gb` (default: half the free memory, since the
XLA CPU runtime was seen to use up to 1.8x the compiled peak, and a process the kernel kills for
memory cannot record anything) is recorded as out of memory without being run, so a 16K dense
layer cannot take the machine down; any other failure is recorded per cell too, and the bench
itself never stops on one. Every value is also given as a ratio to the
`reference` variant (dense) at the same length, measured in the same run. The workdir gets
`results.csv`, `results.md` and `attention_vs_length.png`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from encoders import registry
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments import bench_train, peers
from experiments.bench_train import free_bytes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a bench config[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results.csv, results.md, plot.")

METRICS = (("time_ms", "fwd+bwd time (ms)"), ("memory_mib", "peak memory (MiB)"),
           ("gflops", "GFLOPs per fwd+bwd"))
FIELDS = ("variant", "length", "status", "time_ms", "memory_mib", "gflops", "params", "repeats",
          "time_ratio", "memory_ratio", "gflops_ratio", "note")


def attention_cell(config: ml_collections.ConfigDict, name: str,
                   length: int) -> tuple[Callable, tuple, int]:
  """(fwd+bwd function, its arguments, parameter count) of one attention layer."""
  options = config.options.get(name)
  options = options.to_dict() if hasattr(options, "to_dict") else dict(options or {})
  model = ModelConfig.from_dict(dict(
      vocab_size=1, max_length=length, dim=config.num_heads * config.head_dim,
      num_heads=config.num_heads, head_dim=config.head_dim, num_layers=1, mlp_dim=1,
      dropout_rate=0.0, dtype=config.dtype, attention=dict(name=name, **options)))
  layer = model.build("attention")
  x = jax.random.normal(jax.random.PRNGKey(config.seed), (config.batch_size, length, model.dim),
                        model.compute_dtype)
  params = nn.unbox(jax.jit(layer.init)(jax.random.PRNGKey(config.seed + 1), x)["params"])

  def loss(params, x):
    return jnp.mean(layer.apply({"params": params}, x).astype(jnp.float32) ** 2)

  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return jax.grad(loss, argnums=(0, 1)), (params, x), num_params


def measure(fn: Callable, args: Sequence, *, repeats: int, max_seconds: float,
            limit_bytes: int) -> dict:
  """Compiles `fn(*args)` once and times it; see the module docstring for each number."""
  compiled = jax.jit(fn).lower(*args).compile()
  memory = compiled.memory_analysis()
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes +
          memory.output_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  row = {"memory_mib": peak / 2**20, "gflops": float(cost.get("flops", np.nan)) / 1e9}
  if peak > limit_bytes:
    return {**row, "status": "oom", "note": f"out of memory: the compiled step needs "
            f"{peak / 2**30:.1f} GiB, over the {limit_bytes / 2**30:.1f} GiB limit; not run"}
  start = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  first = time.perf_counter() - start
  runs = max(1, min(repeats, int(max_seconds / max(first, 1e-9))))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return {**row, "status": "ok", "time_ms": 1e3 * statistics.median(times), "repeats": runs}


def run_cell(config: ml_collections.ConfigDict, name: str, length: int,
             limit_bytes: int) -> dict:
  """One measured row; failures become a status and a one-line note, never an exception."""
  row = {"variant": name, "length": length}
  try:
    fn, args, row["params"] = attention_cell(config, name, length)
    return {**row, **measure(fn, args, repeats=config.repeats, max_seconds=config.max_seconds,
                             limit_bytes=limit_bytes)}
  except Exception as error:  # pylint: disable=broad-except
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    oom = isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)
    return {**row, "status": "oom" if oom else "error",
            "note": f"{type(error).__name__}: {message}"}


def add_ratios(rows: list[dict], reference: str) -> None:
  """Adds `<metric>_ratio` = value / the reference's value at the same length."""
  refs = {r["length"]: r for r in rows if r["variant"] == reference}
  for r in rows:
    ref = refs.get(r["length"], {})
    for key, _ in METRICS:
      if r.get(key) is not None and ref.get(key):
        r[key.split("_")[0] + "_ratio"] = r[key] / ref[key]


def write_markdown(rows: list[dict], config: ml_collections.ConfigDict, skipped: list[str],
                   path: str) -> None:
  lengths = sorted({r["length"] for r in rows})
  names = list(dict.fromkeys(r["variant"] for r in rows))
  cell = {(r["variant"], r["length"]): r for r in rows}
  lines = [f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}, "
           f"{os.cpu_count()} host cores); "
           f"{config.dtype}; batch {config.batch_size}, {config.num_heads} heads x "
           f"{config.head_dim}; one attention layer (projections included), forward+backward. "
           f"Each cell: value (x {config.reference} at the same length). Peak memory is the "
           "compiled executable's temp + argument + output bytes (XLA memory_analysis), not the "
           "process RSS; FLOPs from XLA cost_analysis.", ""]
  for key, title in METRICS:
    lines += [f"**{title}**", "", "| variant | " + " | ".join(str(n) for n in lengths) + " |",
              "|---|" + "---:|" * len(lengths)]
    for name in names:
      values = []
      for n in lengths:
        r = cell.get((name, n), {})
        if r.get(key) is None:
          values.append(r.get("status", "–"))
          continue
        ratio = r.get(key.split("_")[0] + "_ratio")
        value = f"{r[key]:.0f}" if r[key] >= 1000 else f"{r[key]:.4g}"
        values.append(value + (f" ({ratio:.3g}x)" if ratio is not None else "") +
                      ("" if r["status"] == "ok" else f" {r['status']}"))
      lines.append(f"| {name} | " + " | ".join(values) + " |")
    lines.append("")
  notes = [f"- {r['variant']} @ {r['length']}: {r['note']}" for r in rows if r.get("note")]
  if skipped:
    notes.append(f"- not registered, skipped: {', '.join(skipped)}")
  lines += (["Notes:", ""] + notes + [""]) if notes else []
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  lengths = sorted({r["length"] for r in rows})
  fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
  for ax, (key, title) in zip(axes, METRICS):
    for name in dict.fromkeys(r["variant"] for r in rows):
      points = [(r["length"], r[key]) for r in rows  # memory, FLOPs: also cells not run
                if r["variant"] == name and r.get(key) is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set(yscale="log", xlabel="sequence length", title=title)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


BENCHMARKS = ("attention", "train", "peer")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs the config's benchmark (`benchmark`: attention by default, train, peer)."""
  benchmark = config.get("benchmark", "attention")
  if benchmark not in BENCHMARKS:
    raise ConfigError(f"benchmark={benchmark!r}; allowed: {', '.join(BENCHMARKS)}")
  if benchmark == "train":
    return bench_train.run(config, workdir)
  if benchmark == "peer":
    return peers.run(config, workdir)
  return run_attention(config, workdir)


def run_attention(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Measures every (registered variant, length); writes the three files; returns the rows."""
  for field in ("lengths", "repeats", "batch_size", "num_heads", "head_dim"):
    values = config[field] if field == "lengths" else [config[field]]
    if not values or any(not isinstance(v, int) or v <= 0 for v in values):
      raise ConfigError(f"{field}={config[field]!r} must be positive integers")
  known = registry.names("attention")
  if config.reference not in known:
    raise ConfigError(f"reference={config.reference!r} is not a registered attention; "
                      f"valid: {', '.join(known)}")
  variants = list(dict.fromkeys([config.reference, *config.variants]))
  skipped = [name for name in variants if name not in known]
  for name in skipped:
    print(f"note: attention {name!r} is not registered; skipped", flush=True)
  limit = int(config.memory_limit_gb * 2**30) or free_bytes() // 2
  rows = []
  for length in config.lengths:
    for name in (v for v in variants if v not in skipped):
      row = run_cell(config, name, length, limit)
      rows.append(row)
      shown = (f"{row['time_ms']:.1f} ms" if "time_ms" in row else row["status"])
      print(f"{name:>12} @ {length:>6}: {shown}, {row.get('memory_mib', float('nan')):.0f} MiB"
            + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)
  add_ratios(rows, config.reference)
  os.makedirs(workdir, exist_ok=True)
  bench_train.write_csv(rows, os.path.join(workdir, "results.csv"), FIELDS)
  write_markdown(rows, config, skipped, os.path.join(workdir, "results.md"))
  plot(rows, os.path.join(workdir, "attention_vs_length.png"))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {os.path.join(_WORKDIR.value, 'results.md')}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
