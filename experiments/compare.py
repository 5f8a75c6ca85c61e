"""Comparison studies from the command line: a grid of config variants x seeds -> results.csv,
results.md, plots.

    python -m experiments.compare --config configs/compare_attention.py --workdir runs/study

experiments/study.py runs (or resumes) the grid's cells, each in `<workdir>/cells/<name>/`;
experiments/study_report.py writes the tables and plots once every cell is done. Rerunning the
same command skips finished cells and resumes a stopped one. A bad study config is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from encoders.errors import ConfigError
from experiments import study


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    study.run_study(flags.FLAGS.config, flags.FLAGS.workdir)
  except ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":  # flags defined here so that importing this module defines none
  config_flags.DEFINE_config_file("config", None, "Study config file.")
  flags.DEFINE_string("workdir", None, "Directory for cells and results.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
