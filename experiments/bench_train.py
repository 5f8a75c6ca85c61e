"""Full MLM train steps: time, tokens/s, memory, FLOPs and MFU per (variant, length).

Used by `python -m experiments.bench --config configs/bench_train.py` (and by the peer
comparison, experiments/peers.py). A cell is the real train step, `experiments.steps.
make_train_step` over `Model` with the runner's optimizer (`experiments.optim`: AdamW, warmup,
global-norm clipping) and a synthetic MLM task (`SyntheticMLM`): every row gets exactly
P = round(mask_rate * length) masked positions drawn from the step's RNG (80% [MASK], 10% a
random token, 10% unchanged, as BERT), so every step does the same work. Two ways to compute the
identical loss:

- `predict="masked"` (the default of our MLM head): `inputs["predict_positions"]` [batch, P],
  the head's transform and vocabulary projection run only there (BERT's masked_lm_positions);
- `predict="all"` ("same work" as Hugging Face's BertForMaskedLM): full-vocabulary logits at
  every position, the loss weighted to the same P positions.

Per cell (see experiments/bench.py for compile, timing and the memory limit): the median and
min-max step time over `repeats` calls, tokens/s, XLA's compiled peak and the process's peak RSS
during the timed calls (`VmHWM`, reset per cell through /proc/self/clear_refs), XLA's FLOPs
per step, and MFU = FLOPs / time / the ceiling: the FLOP/s of one large matmul measured in the
same run (`matmul_ceiling`; for bfloat16 rows, bf16 operands with float32 accumulation, the
only bf16 dots XLA:CPU runs on its native bf16 units).
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import optim, steps
from experiments.tasks.base import Task, weighted_cross_entropy

PREDICT = ("masked", "all")
MASK_ID, FIRST_REGULAR_ID = 4, 5  # special ids below FIRST_REGULAR_ID, as the byte tokenizer


class SyntheticMLM(Task):
  """MLM on fixed random tokens with exactly `num_predict` masked positions per row."""

  def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, num_predict: int,
               predict: str):
    self.config, self.vocab_size = config, vocab_size  # no data: Task.__init__ is not used
    self.num_predict, self.predict = num_predict, predict

  def model_config(self, model: Mapping) -> ModelConfig:
    return ModelConfig.from_dict(model)

  def prepare(self, batch, rng, train):
    del train
    tokens = batch["tokens"]
    order_rng, kind_rng, random_rng = jax.random.split(rng, 3)
    order = jnp.argsort(jax.random.uniform(order_rng, tokens.shape), axis=1)
    positions = jnp.sort(order[:, :self.num_predict], axis=1)  # [batch, P], distinct
    labels = jnp.take_along_axis(tokens, positions, axis=1)
    u = jax.random.uniform(kind_rng, positions.shape)
    random_tokens = jax.random.randint(random_rng, positions.shape, FIRST_REGULAR_ID,
                                       self.vocab_size)
    replaced = jnp.where(u < 0.8, MASK_ID, jnp.where(u < 0.9, random_tokens, labels))
    rows = jnp.arange(tokens.shape[0])[:, None]
    corrupted = tokens.at[rows, positions].set(replaced.astype(tokens.dtype))
    inputs = {"tokens": corrupted, "mask": jnp.ones(tokens.shape, bool)}
    if self.predict == "masked":
      inputs["predict_positions"] = positions
      return inputs, {"labels": labels, "weights": jnp.ones(positions.shape, jnp.float32)}
    weights = jnp.zeros(tokens.shape, jnp.float32).at[rows, positions].set(1.0)
    return inputs, {"labels": tokens, "weights": weights}

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])


def model_dict(config: ml_collections.ConfigDict, length: int, overrides: Mapping) -> dict:
  """The bench's model sub-dict at `length`, with a variant's `model` overrides merged in."""
  model = dict(vocab_size=config.vocab_size, max_length=length, dim=config.dim,
               num_layers=config.num_layers, num_heads=config.num_heads,
               mlp_dim=config.mlp_dim, dropout_rate=config.dropout_rate, dtype=config.dtype,
               scan_layers=config.scan_layers, head=dict(name="mlm"))
  for key, value in overrides.items():
    model[key] = ({**model[key], **value} if isinstance(model.get(key), dict) else value)
  return model


def train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The runner's train fields the optimizer reads (AdamW as in configs/base.py)."""
  return ml_collections.ConfigDict(dict(
      learning_rate=1e-4, warmup_steps=10, num_steps=10_000, schedule="linear",
      end_lr_fraction=0.0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
      grad_clip_norm=config.grad_clip_norm))


def train_cell(config: ml_collections.ConfigDict, length: int, overrides: Mapping,
               predict: str):
  """(train step, (state, batch), parameter count) of the real step on a synthetic batch."""
  if predict not in PREDICT:
    raise ValueError(f"predict={predict!r}; allowed: {', '.join(PREDICT)}")
  model_config = ModelConfig.from_dict(model_dict(config, length, overrides))
  model = Model(model_config)
  num_predict = max(1, round(config.mask_rate * length))
  task = SyntheticMLM(config, model_config.vocab_size, num_predict, predict)
  optimizer, schedule = optim.make_optimizer(train_config(config))
  tokens = jax.random.randint(jax.random.PRNGKey(config.seed), (config.batch_size, length),
                              FIRST_REGULAR_ID, model_config.vocab_size)
  batch = {"tokens": tokens}
  example, _ = task.prepare(batch, jax.random.PRNGKey(0), train=True)
  state = jax.jit(lambda: steps.init_state(model, optimizer, example, config.seed))()
  state = state.replace(params=nn.unbox(state.params), opt_state=nn.unbox(state.opt_state))
  train_step = steps.make_train_step(model, task, optimizer, schedule, {})
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  return train_step, (state, batch), num_params


def matmul_ceiling(size: int, dtype: str, seconds: float = 1.0) -> float:
  """Achieved FLOP/s of one [size, size] x [size, size] matmul (median of timed calls).

  bfloat16: bf16 operands with `preferred_element_type=float32` (f32 accumulation).
  """
  operand = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), operand)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), operand)
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  jax.block_until_ready(matmul(a, b))
  times, deadline = [], time.perf_counter() + seconds
  while len(times) < 3 or time.perf_counter() < deadline:
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


def reset_peak_rss() -> None:
  """Resets the kernel's peak-RSS mark of this process (Linux); no-op elsewhere."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
  except OSError:
    pass


def peak_rss_bytes() -> float:
  """This process's peak RSS since the last reset (VmHWM), or NaN where unknown."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return float(line.split()[1]) * 1024
  except OSError:
    pass
  return float("nan")


def compile_step(fn, args, limit_bytes: int) -> tuple[object, dict]:
  """jit(fn, donating the state).lower.compile, and its memory and FLOPs (XLA's analyses)."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile()
  row = {"compile_s": time.perf_counter() - start}
  memory = compiled.memory_analysis()
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes +
          memory.output_size_in_bytes - memory.alias_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  row.update(memory_mib=peak / 2**20, gflops=float(cost.get("flops", np.nan)) / 1e9)
  if peak > limit_bytes:
    row.update(status="oom", note=f"out of memory: the compiled step needs "
               f"{peak / 2**30:.1f} GiB, over the {limit_bytes / 2**30:.1f} GiB limit; not run")
    return None, row
  return compiled, row


def time_interleaved(cells: list[dict], repeats: int, max_seconds: float) -> None:
  """Warm-up, then `repeats` rounds calling every cell once each; sets times and peak RSS.

  Cells carry `compiled` and `args` (state first, donated: each call's new state is the next
  call's input). Rounds stop early once they exceed `max_seconds` (at least one round).
  """
  for cell in cells:
    reset_peak_rss()
    cell["args"] = (jax.block_until_ready(cell["compiled"](*cell["args"])[0]),
                    *cell["args"][1:])
    cell["times"], cell["cpu"], cell["rss"] = [], [], peak_rss_bytes()
  started = time.perf_counter()
  for _ in range(repeats):
    for cell in cells:
      reset_peak_rss()
      start, cpu = time.perf_counter(), time.process_time()
      state = jax.block_until_ready(cell["compiled"](*cell["args"])[0])
      cell["times"].append(time.perf_counter() - start)
      cell["cpu"].append(time.process_time() - cpu)
      cell["rss"] = max(cell["rss"], peak_rss_bytes())
      cell["args"] = (state, *cell["args"][1:])
    if time.perf_counter() - started > max_seconds:
      break


def summarize_times(times: list[float], cpu: list[float], tokens: int, gflops: float,
                    ceiling: float) -> dict:
  """time_ms (median), min/max, process CPU ms per call (median; CPU / wall = the cores kept
  busy), tokens/s, achieved GFLOP/s and MFU."""
  median = statistics.median(times)
  return {"time_ms": 1e3 * median, "time_min_ms": 1e3 * min(times),
          "time_max_ms": 1e3 * max(times), "repeats": len(times),
          "cpu_ms": 1e3 * statistics.median(cpu),
          "tokens_per_s": tokens / median, "gflops_per_s": gflops / median,
          "mfu": gflops * 1e9 / median / ceiling if ceiling else float("nan")}


def cpu_threads() -> int:
  """The cores this process may run on (what XLA:CPU's thread pool uses)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def free_bytes() -> int:
  """Free memory of the default device: its allocator limit, or MemAvailable on the host."""
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  with open("/proc/meminfo", encoding="utf-8") as f:
    info = dict(line.split(":", 1) for line in f)
  return int(info["MemAvailable"].split()[0]) * 1024


def error_row(error: Exception) -> dict:
  """status + one-line note of a failed cell (out of memory or any other error)."""
  message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  oom = isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)
  return {"status": "oom" if oom else "error", "note": f"{type(error).__name__}: {message}"}


def variant_specs(config: ml_collections.ConfigDict) -> list[tuple[str, dict, str]]:
  """(label, model overrides, predict) of every variant; bad entries are a ConfigError."""
  specs = []
  for entry in config.variants:
    if len(entry) != 2 or not isinstance(entry[0], str):
      raise ConfigError(f"variants entry {entry!r} must be (label, dict(model=..., predict=...))")
    label, spec = entry[0], dict(entry[1])
    unknown = sorted(set(spec) - {"model", "predict"})
    if unknown:
      raise ConfigError(f"variants[{label!r}].{unknown[0]}: allowed keys: model, predict")
    predict = spec.get("predict", "masked")
    if predict not in PREDICT:
      raise ConfigError(f"variants[{label!r}].predict={predict!r}; allowed: "
                        f"{', '.join(PREDICT)}")
    specs.append((label, dict(spec.get("model", {})), predict))
  return specs


FIELDS = ("variant", "length", "predict", "dtype", "status", "params", "compile_s", "time_ms",
          "time_min_ms", "time_max_ms", "repeats", "cpu_ms", "tokens_per_s", "gflops",
          "gflops_per_s", "ceiling_gflops_per_s", "mfu", "memory_mib", "rss_mib", "time_ratio",
          "tokens_per_s_ratio", "gflops_ratio", "mfu_ratio", "memory_ratio", "rss_ratio", "note")
RATIOS = ("time_ms", "tokens_per_s", "gflops", "mfu", "memory_mib", "rss_mib")


def ratio_key(key: str) -> str:
  return key.removesuffix("_ms").removesuffix("_mib") + "_ratio"


def add_ratios(rows: list[dict], reference: str) -> None:
  """`<metric>_ratio` = value / the reference variant's value at the same length."""
  refs = {r["length"]: r for r in rows if r["variant"] == reference}
  for r in rows:
    ref = refs.get(r["length"], {})
    for key in RATIOS:
      if r.get(key) is not None and ref.get(key):
        r[ratio_key(key)] = r[key] / ref[key]


def measure_length(config: ml_collections.ConfigDict, length: int, specs, ceilings: dict,
                   limit_bytes: int) -> list[dict]:
  """Compiles every variant at `length`, then times them interleaved; one row each."""
  rows, cells = [], []
  for label, overrides, predict in specs:
    dtype = overrides.get("dtype", config.dtype)
    row = {"variant": label, "length": length, "predict": predict, "dtype": dtype,
           "ceiling_gflops_per_s": ceilings[dtype] / 1e9}
    try:
      fn, args, row["params"] = train_cell(config, length, overrides, predict)
      compiled, measured = compile_step(fn, args, limit_bytes)
      row.update(measured)
      if compiled is not None:
        cells.append({"row": row, "compiled": compiled, "args": args})
    except Exception as error:  # pylint: disable=broad-except
      row.update(error_row(error))
    rows.append(row)
  try:
    time_interleaved(cells, config.repeats, config.max_seconds)
  except Exception as error:  # pylint: disable=broad-except
    for cell in cells:
      cell["row"].update(error_row(error))
    return rows
  for cell in cells:
    row = cell["row"]
    row.update(status="ok", rss_mib=cell["rss"] / 2**20,
               **summarize_times(cell["times"], cell["cpu"], config.batch_size * length,
                                 row["gflops"], ceilings[row["dtype"]]))
  return rows


def write_csv(rows: list[dict], path: str, fields: Sequence[str] = FIELDS) -> None:
  """One row per dict, only the `fields` columns; floats to 6 significant digits."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                       for k, v in r.items() if k in fields})


def _number(value: float, digits: str = ".4g") -> str:
  return f"{value:.0f}" if abs(value) >= 1000 else f"{value:{digits}}"


def _value(r: dict, key: str, digits: str = ".4g") -> str:
  if r.get(key) is None:
    return "–"
  ratio = r.get(ratio_key(key))
  return _number(r[key], digits) + (f" ({ratio:.3g}x)" if ratio is not None else "")


def _cores(r: dict) -> str:
  return f"{r['cpu_ms'] / r['time_ms']:.2f}" if r.get("cpu_ms") is not None else "–"


def markdown(rows: list[dict], config: ml_collections.ConfigDict, ceilings: dict) -> str:
  ceiling = ", ".join(f"{dtype} {value / 1e9:.0f} GFLOP/s" for dtype, value in ceilings.items())
  lines = [
      f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {cpu_threads()} "
      f"cores); MLM train step (forward, backward, AdamW) of width {config.dim}, "
      f"{config.num_layers} layers, {config.num_heads} heads, FFN {config.mlp_dim}, vocabulary "
      f"{config.vocab_size}, batch {config.batch_size}, {config.mask_rate:.0%} of positions "
      f"predicted. Time: median [min-max] of {config.repeats} interleaved calls after a "
      "warm-up. Peak memory: XLA's compiled peak (memory_analysis) and the process's peak RSS "
      "during the timed calls. Cores busy: process CPU time / wall time per call. MFU: XLA "
      f"FLOPs / time / the same-run matmul ceiling ({ceiling}). Each value (x "
      f"{config.reference} at the same length, same run).", "",
      "| variant | length | predict | dtype | step ms [min-max] | cores busy | tokens/s | "
      "GFLOP/step | MFU | XLA peak MiB | peak RSS MiB |",
      "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r.get("time_ms") is None:
      time_text = r["status"]
    else:
      time_text = (f"{_value(r, 'time_ms')} [{_number(r['time_min_ms'])}-"
                   f"{_number(r['time_max_ms'])}]")
    mfu = (f"{100 * r['mfu']:.1f}%" + (f" ({r['mfu_ratio']:.3g}x)" if "mfu_ratio" in r else "")
           if r.get("mfu") is not None else "–")
    lines.append(f"| {r['variant']} | {r['length']} | {r['predict']} | {r['dtype']} | "
                 f"{time_text} | {_cores(r)} | {_value(r, 'tokens_per_s', '.0f')} | "
                 f"{_value(r, 'gflops')} | "
                 f"{mfu} | {_value(r, 'memory_mib', '.0f')} | {_value(r, 'rss_mib', '.0f')} |")
  notes = [f"- {r['variant']} @ {r['length']}: {r['note']}" for r in rows if r.get("note")]
  return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  metrics = (("tokens_per_s", "train tokens/s"), ("memory_mib", "XLA peak memory (MiB)"),
             ("mfu", "MFU (of the matmul ceiling)"))
  lengths = sorted({r["length"] for r in rows})
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
  for ax, (key, title) in zip(axes, metrics):
    for name in dict.fromkeys(r["variant"] for r in rows):
      points = [(r["length"], r[key]) for r in rows
                if r["variant"] == name and r.get(key) is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="sequence length", title=title, yscale="linear" if key == "mfu" else "log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def check_config(config: ml_collections.ConfigDict) -> list[tuple[str, dict, str]]:
  for field in ("lengths", "repeats", "batch_size", "num_heads", "num_layers", "dim", "mlp_dim",
                "vocab_size", "ceiling_size"):
    values = config[field] if field == "lengths" else [config[field]]
    if not values or any(not isinstance(v, int) or v <= 0 for v in values):
      raise ConfigError(f"{field}={config[field]!r} must be positive integers")
  specs = variant_specs(config)
  if config.reference not in [label for label, _, _ in specs]:
    raise ConfigError(f"reference={config.reference!r} is not a variant label; valid: "
                      f"{', '.join(label for label, _, _ in specs)}")
  return specs


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every (length, variant) train step; writes results.csv, results.md, train_step.png."""
  specs = check_config(config)
  dtypes = dict.fromkeys([config.dtype] + [o.get("dtype", config.dtype) for _, o, _ in specs])
  ceilings = {dtype: matmul_ceiling(config.ceiling_size, dtype, config.ceiling_seconds)
              for dtype in dtypes}
  for dtype, value in ceilings.items():
    print(f"matmul ceiling ({dtype}, {config.ceiling_size}^3): {value / 1e9:.1f} GFLOP/s",
          flush=True)
  limit = int(config.memory_limit_gb * 2**30) or free_bytes() // 2
  rows = []
  for length in config.lengths:
    for row in measure_length(config, length, specs, ceilings, limit):
      rows.append(row)
      shown = (f"{row['time_ms']:.1f} ms, {row['tokens_per_s']:.0f} tokens/s, MFU "
               f"{100 * row['mfu']:.1f}%" if "time_ms" in row else row["status"])
      print(f"{row['variant']:>24} @ {length:>5}: {shown}"
            + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)
  add_ratios(rows, config.reference)
  os.makedirs(workdir, exist_ok=True)
  write_csv(rows, os.path.join(workdir, "results.csv"))
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown(rows, config, ceilings))
  plot(rows, os.path.join(workdir, "train_step.png"))
  return rows
