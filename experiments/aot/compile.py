"""Compile a config's train and eval steps for a target it does not run on, and report.

`compile_steps(config, target)` builds the runner's own program (`experiments.train.
build_program`: task, model, optimizer, shardings, jitted steps) over the config's mesh laid on
the target's compile-only devices, traces the steps from abstract shapes (no parameter is
materialised), and compiles them with the target's compiler (XLA:GPU with Triton and ptxas, or
XLA:TPU with Mosaic). Per step it returns:

- `compiled`, and `error` (the compiler's message in one line) when not;
- per-device memory from XLA's buffer assignment: arguments, outputs, temporaries, code, the
  donated (aliased) bytes, and the total against the chip's memory;
- FLOPs and bytes per step: ours (experiments/costs.py: every layer, attention kernels
  included) and XLA's where the backend reports them (XLA:GPU does not), with XLA:TPU's own
  cost-model time (which, like its FLOPs, sees a scanned layer once and no kernel's work);
- a roofline estimate: time = max(FLOPs / peak, bytes / bandwidth) per device from our counts,
  with the tokens/s and MFU at that time. An estimate, not a measurement: the lowest time the
  chip's peak figures allow for the counted work (experiments/aot/targets.py), which real steps
  do not reach;
- which implementation each attention layer (and MoE grouped matmul, Mamba scan) got, with
  `auto`'s reason where it fell back (encoders/target.py);
- the compile time.

What compiling proves: the program lowers for the chip (Pallas kernels through Mosaic or
Triton, cuDNN calls), fits its tiling, scalar and shared memory limits, is partitioned over the
mesh, and needs the reported memory. What it does not: numerics (interpret mode and the device
check test those) and speed (the roofline is a bound, not a timing).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from encoders import target as target_lib
from experiments import costs, partitioning
from experiments.aot.targets import GIB, Target
from experiments.train import build_program

TRITON_GEMM_TILES = "Couldn't find output tile sizes"  # XLA:GPU without autotuning


def _abstract_batch(batch: Mapping[str, np.ndarray], sharding) -> dict:
  return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype, sharding=sharding)
          for k, v in batch.items()}


def one_line(error: Exception) -> str:
  """The first informative line of a compiler error."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = next((line for line in lines if "RESOURCE_EXHAUSTED" in line), lines[0] if lines
              else type(error).__name__)
  return f"{type(error).__name__}: {text}"[:400]


def memory_report(compiled, chip_memory: float) -> dict:
  """Per-device bytes from XLA's buffer assignment and the fit against `chip_memory`."""
  m = compiled.memory_analysis()
  out = {"argument_bytes": float(m.argument_size_in_bytes),
         "output_bytes": float(m.output_size_in_bytes),
         "temp_bytes": costs.temp_bytes(m),
         "code_bytes": float(m.generated_code_size_in_bytes),
         "alias_bytes": float(m.alias_size_in_bytes)}
  total = (out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] + out["code_bytes"]
           - out["alias_bytes"])
  out.update(total_bytes=total, device_memory_bytes=chip_memory, fits=total <= chip_memory,
             fraction_of_memory=total / chip_memory)
  return out


def roofline(flops: float, bytes_moved: float, tokens: float, peak: float,
             bandwidth: float) -> dict:
  """The roofline estimate of one step on one device (see the module docstring)."""
  compute_s, memory_s = flops / peak, bytes_moved / bandwidth
  seconds = max(compute_s, memory_s)
  if seconds <= 0:
    return {}
  return {"estimated_step_seconds": seconds,
          "bound": "compute" if compute_s >= memory_s else "memory",
          "estimated_tokens_per_second": tokens / seconds,
          "estimated_mfu": flops / seconds / peak}


@dataclasses.dataclass
class StepInput:
  """What one step is traced with: the jitted function, its abstract arguments, the tokens it
  processes per call (global)."""
  name: str
  fn: object
  args: tuple
  tokens: int


def compile_one(step: StepInput, target: Target, dtype: str, num_devices: int) -> dict:
  """Trace, lower and compile one step (see the module docstring)."""
  row: dict = {"step": step.name}
  start = time.perf_counter()
  with target_lib.record() as choices:
    traced = step.fn.trace(*step.args)
  program = costs.program_cost(traced.jaxpr)
  row["choices"] = [dataclasses.asdict(c) for c in choices]
  lowered = traced.lower()
  try:
    try:
      compiled = lowered.compile()
    except Exception as error:  # pylint: disable=broad-except
      if target.chip.platform != "gpu" or TRITON_GEMM_TILES not in str(error):
        raise
      # XLA:GPU picks Triton GEMM tiles by autotuning on a device; compile-only, a fusion can
      # find none. The same program with its products on cuBLAS instead:
      compiled = lowered.compile({"xla_gpu_enable_triton_gemm": False})
      row["note"] = "compiled with xla_gpu_enable_triton_gemm=false (no device to autotune on)"
  except Exception as error:  # pylint: disable=broad-except  (report the compiler's refusal)
    row.update(compiled=False, error=one_line(error),
               compile_seconds=time.perf_counter() - start)
    return row
  row.update(compiled=True, compile_seconds=time.perf_counter() - start)
  row["memory"] = memory_report(compiled, target.chip.memory_bytes)
  xla = costs.compiled_cost(compiled)
  # The traced program is global, XLA's figures per device. The roofline takes our count alone:
  # XLA's sees a scanned stack's body once, so mixing the two would rank a scanned model and an
  # unrolled one on different bases.
  flops, bytes_moved = program.flops / num_devices, program.bytes / num_devices
  row.update(flops_per_step=program.flops, flops_per_device=flops,
             bytes_per_device=program.bytes / num_devices,
             uncounted_kernels=program.uncounted_kernels,
             xla_flops_per_device=xla.get("xla_flops_per_step"),
             xla_bytes_per_device=xla.get("xla_bytes_per_step"),
             xla_estimated_step_seconds=xla.get("xla_optimal_seconds"))
  if (row["xla_estimated_step_seconds"] or 0) <= 0:  # XLA:TPU gives negative values at times
    row["xla_estimated_step_seconds"] = None
  row.update(roofline(flops, bytes_moved, step.tokens / num_devices,
                      target.chip.matmul_peak(dtype), target.chip.bandwidth))
  return row


def with_batch(config: ml_collections.ConfigDict, per_device: int,
               shards: int) -> ml_collections.ConfigDict:
  """`config` with train.batch_size = per_device x shards (data x fsdp)."""
  config = copy.deepcopy(config)
  config.train.batch_size = per_device * shards
  return config


def mock_tfds(config: ml_collections.ConfigDict):
  """TFDS sources read random examples of their datasets' features (`tfds.testing.mock_data`):
  a compile needs the batch shapes, not the data."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (optional path)

  return tfds.testing.mock_data(num_examples=max(config.train.batch_size,
                                                 config.eval.batch_size))


def compile_steps(config: ml_collections.ConfigDict, target: Target, *,
                  eval_step: bool = True, mock_data: bool = False) -> dict:
  """The report of `config`'s train (and eval) step compiled for `target` (with `mock_data`:
  TFDS data mocked, `mock_tfds`)."""
  with mock_tfds(config) if mock_data else contextlib.nullcontext():
    return _compile_steps(config, target, eval_step)


def _compile_steps(config: ml_collections.ConfigDict, target: Target, eval_step: bool) -> dict:
  mesh = partitioning.make_mesh(config.mesh, target.devices)
  dtype = config.model.get("dtype", "float32")
  report = {"target": target.name, "chip": target.chip.name, "num_devices": len(target.devices),
            "mesh": dict(mesh.shape), "dtype": dtype,
            "peak_flops_per_second": target.chip.matmul_peak(dtype),
            "bandwidth_bytes_per_second": target.chip.bandwidth,
            "train_batch_size": int(config.train.batch_size),
            "num_steps": int(config.train.num_steps)}
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules()):
    start = time.perf_counter()
    program = build_program(config, mesh)
    report["build_seconds"] = time.perf_counter() - start
    batch_sharding = partitioning.batch_sharding(mesh)
    train_batch = program.task.train_batch(0)
    report.update(length=int(program.length),
                  num_params=int(sum(np.prod(x.shape) for x in
                                     jax.tree.leaves(program.abstract.params))))
    steps = [StepInput("train", program.train_step,
                       (program.abstract_state(), _abstract_batch(train_batch, batch_sharding)),
                       int(np.prod(train_batch["inputs"].shape)))]
    if eval_step:
      eval_batch = next(iter(program.task.eval_batches()))
      rng = jax.ShapeDtypeStruct((2,), jnp.uint32,
                                 sharding=partitioning.replicated(mesh))
      params = program.abstract_state().params
      steps.append(StepInput("eval", program.eval_step,
                             (params, _abstract_batch(eval_batch, batch_sharding), rng),
                             int(np.prod(eval_batch["inputs"].shape))))
    report["steps"] = [compile_one(s, target, dtype, len(target.devices)) for s in steps]
  return report


def fits(config: ml_collections.ConfigDict, target: Target,
         mock_data: bool = False) -> tuple[bool, dict]:
  """Whether the train step compiles and fits the chip's memory, and its report."""
  report = compile_steps(config, target, eval_step=False, mock_data=mock_data)
  step = report["steps"][0]
  return bool(step.get("compiled") and step["memory"]["fits"]), report


def find_batch(config: ml_collections.ConfigDict, target: Target, limit: int = 1 << 16,
               mock_data: bool = False) -> tuple[int, list[dict]]:
  """The largest per-device train batch whose step compiles and fits (0 if even 1 does not):
  from the config's own, doubling (or halving) to the first miss (fit), then bisection; also
  the (batch, fits, total GiB) of every probe."""
  mesh = partitioning.make_mesh(config.mesh, target.devices)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  step_multiple = max(1, int(config.train.grad_accum_steps))
  probes: list[dict] = []

  def probe(per_device: int) -> bool:
    ok, report = fits(with_batch(config, per_device * step_multiple, shards), target,
                      mock_data)
    step = report["steps"][0]
    probes.append({"per_device_batch": per_device * step_multiple, "fits": ok,
                   "total_gib": step.get("memory", {}).get("total_bytes", float("nan")) / GIB,
                   "error": step.get("error", "")})
    return ok

  start = max(1, int(config.train.batch_size) // (shards * step_multiple))
  if probe(start):  # double until a miss
    good, bad = start, start * 2
    while bad <= limit and probe(bad):
      good, bad = bad, bad * 2
    if bad > limit:
      return good * step_multiple, probes
  else:  # halve until a fit
    good, bad = start // 2, start
    while good >= 1 and not probe(good):
      good, bad = good // 2, good
    if good < 1:
      return 0, probes
  while bad - good > 1:  # bisection between the last fit and the first miss
    middle = (good + bad) // 2
    if probe(middle):
      good = middle
    else:
      bad = middle
  return good * step_multiple, probes
