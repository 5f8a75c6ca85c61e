"""Efficiency benchmarks, one module each; the config's `benchmark` field picks one:

    python -m experiments.bench --config configs/bench/<name>.py[:quick] --workdir DIR

`attention` (one attention layer vs length), `train_step` (full MLM train steps with MFU),
`peers` (our MLM step vs Hugging Face's PyTorch and Flax BERT), `connections` (cross-layer
connections vs depth), `moe` (one MoE FFN layer vs a dense FFN) and `packing` (padding and
packing speed on real corpora). Every one measures through experiments/bench/measure.py and
writes `results.csv` and `results.md` (and a plot where it has an x axis) into the workdir.
Importing this package defines no command-line flags (experiments/bench/__main__.py does).
"""

from __future__ import annotations

import importlib

import ml_collections

from encoders.errors import ConfigError

BENCHMARKS = ("attention", "train_step", "peers", "connections", "moe", "packing")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs the config's benchmark in `workdir`; returns its result rows."""
  benchmark = config.get("benchmark")
  if benchmark not in BENCHMARKS:
    raise ConfigError(f"benchmark={benchmark!r}; allowed: {', '.join(BENCHMARKS)}")
  return importlib.import_module(f"experiments.bench.{benchmark}").run(config, workdir)
