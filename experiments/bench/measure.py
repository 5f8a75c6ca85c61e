"""How every benchmark measures, so that a figure means one thing in every table.

- `compile_cell`: jit + trace + lower + compile once (donating the state for train steps), with
  the compile time, on a known accelerator the roofline estimate (`roofline_estimate`), XLA's
  FLOP count and compiled peak memory (`experiments.costs.compiled_cost`:
  temp + argument + output bytes - donated bytes, what the step needs, not the process RSS);
  a cell whose compiled peak exceeds the memory limit
  (default: half the free memory, since XLA's CPU runtime was seen to use up to 1.8x the
  compiled peak and a process the kernel kills records nothing) becomes an `oom` row, not run.
- `time_interleaved`: one warm-up call of every cell, then rounds that call every cell in turn
  (load drift on a shared machine hits all alike); median [min-max] wall time, process CPU time
  and the process's peak RSS during the cell's calls (VmHWM, reset per call).
- `matmul_ceiling`: FLOP/s of one large matmul in the same run (the denominator of MFU).
- `error_row`, and the config checks every benchmark runs before measuring.
The tables and plots are experiments/bench/report.py.
"""


from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from encoders.errors import ConfigError
from experiments import costs
from experiments.aot import targets

PEAK_MEMORY = ("XLA's compiled peak, temp + argument + output bytes minus donated (aliased) "
               "bytes (memory_analysis), not the process RSS")


def compile_cell(fn: Callable, args: Sequence, limit_bytes: float, *,
                 donate_state: bool = False) -> dict:
  """compile_s, memory_mib and gflops of `jit(fn)` on `args`, and `call` (no arguments; waits
  for the result) unless the compiled peak exceeds `limit_bytes` (then an `oom` row). With
  `donate_state`, args[0] is donated and each call's first output is the next call's args[0]."""
  start = time.perf_counter()
  traced = jax.jit(fn, donate_argnums=0 if donate_state else ()).trace(*args)
  compiled = traced.lower().compile()
  compile_s = time.perf_counter() - start
  cost = costs.compiled_cost(compiled)
  peak = cost.get("peak_memory_bytes", float("nan"))
  row = {"compile_s": compile_s, "memory_mib": peak / 2**20,
         "gflops": cost.get("xla_flops_per_step", float("nan")) / 1e9}
  row.update(roofline_estimate(costs.program_cost(traced.jaxpr), args))
  if peak > limit_bytes:
    return {**row, "status": "oom", "note": f"out of memory: the compiled step needs "
            f"{peak / 2**30:.1f} GiB, over the {limit_bytes / 2**30:.1f} GiB limit; not run"}
  args = list(args)

  def call():
    out = jax.block_until_ready(compiled(*args))
    if donate_state:
      args[0] = out[0]

  return {**row, "call": call}


def roofline_estimate(program: costs.ProgramCost, args: Sequence) -> dict:
  """On a chip with known peak figures (experiments/aot/targets.py): the roofline estimate
  of the call, max(FLOPs / peak, bytes / bandwidth), from our count of the traced program
  (experiments/costs.py), to print beside the measured time; {} elsewhere (CPUs)."""
  chip = targets.chip_of(jax.devices()[0])
  if chip is None or program.flops <= 0:
    return {}
  dtypes = {getattr(x, "dtype", None) for x in jax.tree.leaves(args)}
  peak = chip.peak_bf16 if jnp.bfloat16 in dtypes else chip.peak_f32
  seconds = max(program.flops / peak, program.bytes / chip.bandwidth)
  return {"estimated_ms": 1e3 * seconds, "model_gflops": program.flops / 1e9}


def error_row(error: Exception) -> dict:
  """status + one-line note of a failed cell (out of memory or any other error)."""
  message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  oom = isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)
  return {"status": "oom" if oom else "error", "note": f"{type(error).__name__}: {message}"}


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


def time_interleaved(rows: list[dict], repeats: int, max_seconds: float) -> None:
  """Times every row that holds a `call` (see the module docstring) and removes the call.

  Rounds stop early once they took `max_seconds` (at least one round). Sets status "ok",
  time_ms (median), time_min_ms, time_max_ms, repeats, cpu_ms (median process CPU time per
  call: cpu_ms / time_ms = the cores kept busy) and rss_mib; a call that raises turns its row
  into an error row and leaves the rounds.
  """
  record = {id(r): {"times": [], "cpu": [], "rss": []} for r in rows if "call" in r}

  def timed(row: dict, keep: bool) -> bool:
    figures = record[id(row)]
    reset_peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    try:
      row["call"]()
    except Exception as error:  # pylint: disable=broad-except
      row.update(error_row(error))
      return False
    if keep:
      figures["times"].append(time.perf_counter() - start)
      figures["cpu"].append(time.process_time() - cpu)
    figures["rss"].append(peak_rss_bytes())
    return True

  live = [r for r in rows if "call" in r and timed(r, keep=False)]
  started = time.perf_counter()
  for _ in range(repeats):
    live = [r for r in live if timed(r, keep=True)]
    if time.perf_counter() - started > max_seconds:
      break
  for r in rows:
    figures = record.get(id(r))
    if r.pop("call", None) is None or "status" in r:  # not timed, or failed
      continue
    times = figures["times"]
    r.update(status="ok", time_ms=1e3 * statistics.median(times), time_min_ms=1e3 * min(times),
             time_max_ms=1e3 * max(times), repeats=len(times),
             cpu_ms=1e3 * statistics.median(figures["cpu"]), rss_mib=max(figures["rss"]) / 2**20)


def throughput(row: dict, tokens: int, gflops: float, ceiling: float) -> dict:
  """tokens/s, achieved GFLOP/s and MFU (= FLOP/s / the matmul ceiling) of a timed row."""
  seconds = row["time_ms"] / 1e3
  return {"tokens_per_s": tokens / seconds, "gflops_per_s": gflops / seconds,
          "mfu": gflops * 1e9 / seconds / ceiling if ceiling else float("nan")}


def matmul_ceiling(size: int, dtype: str, seconds: float = 1.0) -> float:
  """Achieved FLOP/s of one [size, size] x [size, size] matmul (median of timed calls).

  bfloat16: bf16 operands with `preferred_element_type=float32` (f32 accumulation, the only bf16
  dots XLA:CPU runs on its native bf16 units).
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


def measure_ceilings(config: ml_collections.ConfigDict, dtypes: Sequence[str]) -> dict:
  """dtype -> the matmul ceiling (FLOP/s) of config.ceiling_size, printed as measured."""
  ceilings = {}
  for dtype in dict.fromkeys(dtypes):
    ceilings[dtype] = matmul_ceiling(config.ceiling_size, dtype, config.ceiling_seconds)
    print(f"matmul ceiling ({dtype}, {config.ceiling_size}^3): {ceilings[dtype] / 1e9:.1f} "
          "GFLOP/s", flush=True)
  return ceilings


def cpu_threads() -> int:
  """The cores this process may run on (what XLA:CPU's thread pool uses)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def memory_limit(config: ml_collections.ConfigDict) -> float:
  """config.memory_limit_gb in bytes; 0 = half the default device's free memory (its allocator
  limit, or MemAvailable on the host)."""
  if config.memory_limit_gb:
    return config.memory_limit_gb * 2**30
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return (int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))) / 2
  with open("/proc/meminfo", encoding="utf-8") as f:
    info = dict(line.split(":", 1) for line in f)
  return int(info["MemAvailable"].split()[0]) * 1024 / 2


def check_reference(reference: str, labels: Sequence[str]) -> None:
  """The config's `reference` must be one of the variant labels; else a ConfigError."""
  if reference not in labels:
    raise ConfigError(f"reference={reference!r} is not a variant label; allowed: "
                      f"{', '.join(labels)}")


def check_positive(config: ml_collections.ConfigDict, fields: Sequence[str]) -> None:
  """Each field (an int, or a non-empty sequence of ints) must be positive; else a ConfigError."""
  for field in fields:
    value = config[field]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                         for v in values):
      raise ConfigError(f"{field}={value!r} must be a positive integer or a non-empty tuple "
                        "of them")
