"""`python -m experiments.aot`: see experiments/aot/__init__.py."""

from __future__ import annotations

import json
import os
import sys

# Before jax loads its plugins: the CUDA plugin's driver check would refuse a machine without a
# GPU, and the process itself computes on the CPU (the targets' devices are compile-only).
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to guard
# pylint: disable=wrong-import-position

from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments import overrides
from experiments.aot import compile as aot_compile
from experiments.aot import report, targets

_ARGV: list[str] = []
_VARIANT_OVERRIDES: list[tuple[str, str]] = []
_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file[:preset].",
                                          lock_config=True, sys_argv=_ARGV)
_TARGET = flags.DEFINE_string("target", None, "h100, h200, a100 (optionally :<devices>) or a "
                              "TPU topology (v4:2x2x1, v5e:2x2, v5e:4x4, v5p:2x2x1, v6e:2x2).")
_FIND_BATCH = flags.DEFINE_bool("find_batch", False,
                                "Also search the largest per-device train batch that fits.")
_MOCK_DATA = flags.DEFINE_bool(
    "mock_data", False, "TFDS sources read random examples of the dataset's features "
    "(tfds.testing.mock_data): a compile needs the batch shapes, not the data, so a config "
    "whose TFDS data is not prepared on this machine compiles too.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON report (default: "
                           "runs/aot/<config>_<target>.json).")
flags.mark_flags_as_required(["config", "target"])


def default_out(config_arg: str, target: str) -> str:
  stem = os.path.splitext(os.path.basename(config_arg.split(":")[0]))[0]
  preset = config_arg.split(":")[1] if ":" in config_arg else ""
  name = "_".join(p for p in (stem, preset, target.replace(":", "-")) if p)
  return os.path.join("runs", "aot", f"{name}.json")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    targets.parse(_TARGET.value)
    config = _CONFIG.value
    _ = config.task
    overrides.apply(config, _VARIANT_OVERRIDES)
    target = targets.resolve(_TARGET.value)
    result = aot_compile.compile_steps(config, target, mock_data=_MOCK_DATA.value)
    if _FIND_BATCH.value:
      best, probes = aot_compile.find_batch(config, target, mock_data=_MOCK_DATA.value)
      result["find_batch"] = {"largest_per_device_batch": best, "probes": probes}
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except OSError as error:  # the config file could not be loaded
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: --config: {lines[-1] if lines else error}", file=sys.stderr)
    sys.exit(2)
  result["config"] = flags.FLAGS["config"].serialize().split("=", 1)[-1]
  out = _OUT.value or default_out(result["config"], _TARGET.value)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(report.text(result))
  print(f"written: {out}")
  if not all(step.get("compiled") for step in result["steps"]):
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  return overrides.parse_flags(argv, _ARGV, _VARIANT_OVERRIDES)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
