"""A study: a grid of config variants x seeds, each cell trained (or resumed) in its own run dir.

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
`nonfinite` and no final metrics. When every cell is done, experiments/study_report.py writes
the tables and plots; with `study.attention_bench` (the attention benchmark's settings, e.g.
configs/bench/attention.py's `study` preset: one length) the cells' attention layers are also
timed there (experiments/bench/attention.py `tradeoff`) and the table appended to results.md.
The command line is experiments/compare.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from encoders.errors import ConfigError
from experiments import preemption, study_report
from experiments import workdir as workdir_lib
from experiments.bench import attention as bench_attention
from experiments.metrics import read_jsonl
from experiments.train import FINISHED, NONFINITE, train_and_evaluate

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


def run_study(study: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]] | None:
  """Runs (or resumes) every cell, then writes the results; returns the rows, or None when a
  cell stopped early (SIGTERM or `train.steps_per_run`): it saved a checkpoint, and running
  the study again resumes it."""
  if study.mode not in ("max", "min"):
    raise ConfigError(f"study.mode={study.mode!r}; allowed: max, min")
  if not study.grid:
    raise ConfigError("study.grid is empty; name at least one field and its values")
  if "attention_bench_length" in study:
    raise ConfigError("study.attention_bench_length: replaced by study.attention_bench, the "
                      "attention benchmark's settings (configs/bench/attention.py:study, with "
                      "lengths=(n,))")
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
  table = study_report.write_results(study, rows, workdir)
  print(table, flush=True)
  if study.get("attention_bench"):
    print("\n" + attention_tradeoff(study, all_cells, configs, workdir), flush=True)
  return rows


def attention_tradeoff(study, all_cells, configs, workdir: str) -> str:
  """The other half of a quality table: the cells' attention layers timed with the study's
  `attention_bench` settings (experiments/bench/attention.py), appended to results.md."""
  specs = {}
  for cell, config in zip(all_cells, configs):
    label = ",".join(str(v) for f, v in cell.items() if f not in study_report.SEED_FIELDS) or "all"
    attention = config.model.attention
    specs[label] = attention.to_dict() if hasattr(attention, "to_dict") else dict(attention)
  table = bench_attention.tradeoff(specs, study.attention_bench,
                                   os.path.join(workdir, "attention_bench"))
  with open(os.path.join(workdir, "results.md"), "a", encoding="utf-8") as f:
    f.write(f"\n{table}\n")
  return table
