"""Benchmark configs; each file's docstring holds its command:

    python -m experiments.bench --config configs/bench/<name>.py[:quick] --workdir DIR

`config.benchmark` names the experiments/bench module that runs it. Every config has a `full`
preset (the measured runs of docs/benchmarks.md) and a tiny `quick` one (tests); the attention
and train-step benches also a `device` one (scripts/device_check.sh, on a GPU): seconds for the
layer and packing benchmarks, a minute or two of CPU for those that compile whole train steps.
This module holds the measurement fields every benchmark reads (experiments/bench/measure.py).
"""

import ml_collections

PRESETS = ("full", "quick")


def check_preset(preset: str, allowed: tuple[str, ...] = PRESETS) -> None:
  if preset not in allowed:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(allowed)}")


def measurement(benchmark: str, *, repeats: int, max_seconds: float) -> ml_collections.ConfigDict:
  """A config for `benchmark` with the fields of the interleaved timer and the memory limit."""
  config = ml_collections.ConfigDict()
  config.benchmark = benchmark  # attention | train_step | peers | connections | moe | packing
  config.repeats = repeats  # timed rounds after one warm-up call each: median [min-max]
  config.max_seconds = max_seconds  # stop adding rounds after this long (at least one round)
  # Cells whose compiled peak exceeds this are recorded as out of memory, not run; 0 = half the
  # free memory (XLA's CPU runtime used up to 1.8x the compiled peak).
  config.memory_limit_gb = 0.0
  config.seed = 0  # inputs and parameters
  return config
