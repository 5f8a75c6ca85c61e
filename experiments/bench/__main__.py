"""Command line entry point of the benchmarks (experiments/bench/__init__.py):

    python -m experiments.bench --config configs/bench/attention.py:quick --workdir /tmp/bench

A bad config (a missing file or preset, an unknown override, a value the benchmark does not
allow) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments import bench


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def last_line(error: Exception) -> str:
  """The last line of an error's text (a config file's traceback ends with its exception)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad preset or `--config.<field>` override is one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    where = f" (one of: {', '.join(overrides)})" if overrides else ""
    fail(f"bad command-line flag{where}: {last_line(error)}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  try:
    config.get("benchmark")  # a config file that failed to load raises on first access
  except OSError as error:
    fail(f"--config: {last_line(error)}")
  try:
    bench.run(config, workdir)
  except ConfigError as error:
    fail(str(error))
  print(f"wrote {os.path.join(workdir, 'results.md')}")


if __name__ == "__main__":  # flags defined here so that importing the package defines none
  config_flags.DEFINE_config_file("config", None, "Path to a bench config[:preset].",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for results.csv, results.md and any plot.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=parse_flags)
