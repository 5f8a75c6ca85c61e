"""Command line entry point.

    python -m experiments.main --config configs/listops_short.py --workdir runs/listops_short
    python -m experiments.main --config configs/listops.py:small --workdir runs/listops \
        --config.model.attention.name=local --config.model.attention.block_size=32 \
        --config.train.num_steps=2000

Any option of a variant can be set so, listed in the file or not (experiments/overrides.py).

Re-running the same command with the same workdir resumes from the latest checkpoint.
Multi-process (multi-host) runs: the same command on every process, plus
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` where nothing detects them
(TPU pods, SLURM and Open MPI are detected); see docs/scaling.md.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments import distributed, overrides
from experiments.train import NONFINITE, train_and_evaluate

# The command line without the flags experiments/overrides.py handles (filled by parse_flags),
# and those flags, which main applies to the loaded config.
_ARGV: list[str] = []
_VARIANT_OVERRIDES: list[tuple[str, str]] = []
_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file[:preset].",
                                          lock_config=True, sys_argv=_ARGV)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, config.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Clear a workdir that holds a run of a different config.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs: host:port of process 0 (same on every "
    "process); default $ENCODERS_COORDINATOR, or auto-detected on TPU pods / SLURM / Open MPI.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Multi-process runs: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "Multi-process runs: this process's index, 0 .. n-1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (Orbax) out
  try:  # before anything touches a device
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  try:
    config = _CONFIG.value
    _ = config.task  # a config file that failed to load only raises on access
  except OSError as error:  # the config file could not be loaded
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: --config: {lines[-1] if lines else error}", file=sys.stderr)
    sys.exit(2)
  try:
    overrides.apply(config, _VARIANT_OVERRIDES)
    result = train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  if result.status == NONFINITE:
    print(f"error: {result.message}", file=sys.stderr)
    sys.exit(3)
  if jax.process_index() != 0:
    return
  if not result.finished:
    print(f"stopped early ({result.status}) at step {result.step} with a checkpoint saved; "
          "run the same command again to continue")
    return
  print("final eval: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config override mistakes in one line (overrides.parse_flags)."""
  return overrides.parse_flags(argv, _ARGV, _VARIANT_OVERRIDES)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
