"""A table of compile reports: cells x sequence lengths of one base config, for one target.

    python -m experiments.aot.grid --config configs/aot_cells.py:attention --target h100 \\
        --workdir runs/aot/attention_h100

The grid config names a base config file (`base`, "path[:preset]"), the `lengths` (set in
`length_field`; none: each config's own), the `per_device_batch` (none: each config's own),
`mock_data` (TFDS data mocked: shapes, not data), `show_hours` (a column of estimated hours for
each config's train.num_steps), `common` and `cells`: (name, overrides) pairs, the overrides
(dotted field, value) pairs applied to the base as on the command line (a cell's `base`
replaces the grid's). Every (cell, length) is compiled with experiments/aot/compile.py (the
train step only) and its row written to `results.jsonl` as soon as it is done (a rerun skips
the rows already there); `results.md` is rewritten each time: per-device memory, whether it
fits, the roofline estimate (an estimate from the chip's peak figures, not a measurement) and
the kernel each attention layer got. A cell whose config or data fails is a row with the error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

# Before jax loads its plugins (see experiments/aot/__main__.py).
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to guard
# pylint: disable=wrong-import-position
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments.aot import compile as aot_compile
from experiments.aot import targets
from experiments.aot.report import fit_line

_CONFIG = config_flags.DEFINE_config_file("config", None, "The grid config file[:preset].")
_TARGET = flags.DEFINE_string("target", None, "A target of experiments.aot.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.jsonl and results.md go.")
flags.mark_flags_as_required(["config", "target", "workdir"])


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(preset)` of a config file given as "path[:preset]"."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"base={spec!r}: no config file {path!r}")
  module_spec = importlib.util.spec_from_file_location("grid_base_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def cell_config(grid: ml_collections.ConfigDict, overrides: dict, length: int,
                num_shards: int) -> ml_collections.ConfigDict:
  """The cell's config: its `base` (or the grid's), the length and per-device batch (where the
  grid sets them: a length of 0 or no `per_device_batch` keeps the config's) and overrides."""
  overrides = dict(overrides)
  config = load_config(overrides.pop("base", grid.base))
  fields = dict(grid.common)
  if length:
    fields[grid.length_field] = length
  if grid.get("per_device_batch"):
    fields.update({"train.batch_size": grid.per_device_batch * num_shards,
                   "eval.batch_size": num_shards})
  fields.update(overrides)
  for field, value in fields.items():
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def row_of(name: str, length: int, report: dict) -> dict:
  step = report["steps"][0]
  row = {"cell": name, "length": length or report["length"],
         "batch": report["train_batch_size"], "compiled": bool(step.get("compiled")),
         "kernels": sorted({c["chosen"] for c in step.get("choices", ())
                            if c["kind"] == "attention"}),
         "compile_seconds": step["compile_seconds"], "error": step.get("error", "")}
  if row["compiled"]:
    memory = step["memory"]
    row.update(total_gib=memory["total_bytes"] / targets.GIB,
               temp_gib=memory["temp_bytes"] / targets.GIB, fits=memory["fits"],
               fit=fit_line(memory), flops_per_device=step["flops_per_device"],
               estimated_ms=1e3 * step.get("estimated_step_seconds", float("nan")),
               estimated_tokens_per_second=step.get("estimated_tokens_per_second"),
               bound=step.get("bound", ""),
               estimated_hours=step.get("estimated_step_seconds", float("nan"))
               * report["num_steps"] / 3600, num_steps=report["num_steps"])
  return row


def error_of(name: str, length: int, error: Exception) -> dict:
  """The row of a cell whose config or data failed before compiling."""
  return {"cell": name, "length": length, "batch": None, "compiled": False, "kernels": [],
          "compile_seconds": 0.0, "error": f"{type(error).__name__}: {error}"}


def markdown(rows: list[dict], target: targets.Target, hours: bool = False) -> str:
  """The table; with `hours`, the estimated hours of each config's train.num_steps too."""
  lines = [f"Target {target.name}: {len(target.devices)} x {target.chip.name}. Memory per "
           "device from XLA's buffer assignment; step time, tokens/s per device"
           + (", hours for the config's train.num_steps" if hours else "") + ": roofline "
           "ESTIMATES from the chip's peak figures (not measured).", "",
           "| cell | length | batch | kernel | total per device | temporaries | fits | "
           "est. ms/step | est. tokens/s/device | bound |" + (" est. hours |" if hours else "")
           + " compile s |", "|" + "---|" * (12 if hours else 11)]
  for r in rows:
    if not r["compiled"]:
      lines.append(f"| {r['cell']} | {r['length']} | {r.get('batch')} | "
                   f"{', '.join(r['kernels'])} | not compiled: {r['error'][:160]} | | | | | |"
                   + (" |" if hours else "") + f" {r['compile_seconds']:.0f} |")
      continue
    lines.append(f"| {r['cell']} | {r['length']} | {r.get('batch')} | "
                 f"{', '.join(r['kernels'])} | {r['total_gib']:.2f} GiB | "
                 f"{r['temp_gib']:.2f} GiB | {r['fit']} | {r['estimated_ms']:.2f} | "
                 f"{r['estimated_tokens_per_second']:.3g} | {r['bound']} |"
                 + (f" {r['estimated_hours']:.2f} |" if hours else "")
                 + f" {r['compile_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  grid = _CONFIG.value
  try:
    target = targets.resolve(_TARGET.value)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  path = os.path.join(_WORKDIR.value, "results.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      rows = [json.loads(line) for line in f if line.strip()]
  done = {r["cell"] for r in rows} if not grid.get("lengths") else {
      (r["cell"], r["length"]) for r in rows}
  hours = bool(grid.get("show_hours", False))
  for length in grid.get("lengths") or (0,):
    for name, overrides in grid.cells:
      if (name, length) in done or name in done:
        continue
      overrides = dict(overrides)
      try:
        base = load_config(overrides.get("base", grid.base))
        shards = len(target.devices) // (int(base.mesh.get("tensor", 1)) *
                                          int(base.mesh.get("expert", 1)))
        config = cell_config(grid, overrides, length, shards)
        report = aot_compile.compile_steps(config, target, eval_step=False,
                                           mock_data=grid.get("mock_data", False))
        rows.append(row_of(name, length, report))
      except (ConfigError, OSError) as error:  # e.g. data this machine does not have
        rows.append(error_of(name, length, error))
      with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rows[-1]) + "\n")
      with open(os.path.join(_WORKDIR.value, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, target, hours))
      print(markdown(rows[-1:], target, hours).splitlines()[-1], flush=True)
  print(markdown(rows, target, hours))


if __name__ == "__main__":
  app.run(main)
