"""The Long Range Arena suite: attention variants x the six LRA tasks x seeds, in LRA's layout.

    python -m experiments.compare --config configs/baselines/lra_suite.py \
        --workdir runs/baselines/lra_suite

Tay et al. 2021, "Long Range Arena" (ICLR), Table 1: every cell is a task's LRA config
(configs/lra/<task>.py: LRA's Transformer model, batch, steps and schedule) with one attention
variant swapped in (the Transformer's sizes for every variant; LRA's per-variant sizes are the
task configs' variant presets, `configs/lra/<task>.py:<variant>`);
`eval.select_best` keeps the parameters with the best validation accuracy and tests them, and
the table at the end of results.md has one row per variant, one column per task (mean ± std of
that test accuracy over seeds) and two averages, each shown for a variant with all its tasks:
over the six tasks (later papers' convention, a failed Path-X scoring about chance, 50%) and
over the five without Path-X (LRA's Table 1, where every model failed Path-X). Text, retrieval
and image need their data first (README, "Long Range Arena"); ListOps and Pathfinder / Path-X
come from our generators (LRA's released files: set `lra_dir`). Accelerator-sized: on CPU run
the `smoke` preset, or configs/baselines/lra_pathfinder_cpu.py.
"""

from configs.baselines import check_preset, dotted
from configs.lra import ATTENTION

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Long Range Arena: attention variants x tasks (test accuracy)"
  study.base = "configs/lra/listops.py"
  study.variants = dotted({  # LRA's names -> our registered variants (configs/lra/__init__.py)
      name: {"model.attention": dict(spec)} for name, spec in ATTENTION.items()})
  variants, tasks, seeds = tuple(study.variants), TASKS, (0, 1, 2)
  study.overrides = dotted({"progress_bar": False})
  if preset == "smoke":  # the offline tasks' smoke presets, two variants, one seed
    variants, tasks, seeds = ("transformer", "performer"), ("listops", "pathfinder"), (0,)
  suffix = ":smoke" if preset == "smoke" else ""
  study.grid = dotted({"variant": variants,
                       "base": tuple(f"configs/lra/{t}.py{suffix}" for t in tasks),
                       "seed": seeds})
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 10.0  # the tasks' models differ by design
  study.table = dotted(dict(rows_field="variant", columns_field="base",
                            metric="test_accuracy", also_average_without="pathx",
                            title="Test accuracy (best validation checkpoint), LRA's layout:"))
  return study
