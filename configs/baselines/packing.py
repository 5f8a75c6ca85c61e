"""Baseline 7: sequence packing: padding removed, training speed-up, same quality.

    python -m experiments.compare --config configs/baselines/packing.py \
        --workdir runs/baselines/packing
    python -m experiments.bench --config configs/bench/packing.py \
        --workdir runs/bench/packing  # padding before/after on every corpus (no training)

Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination": "up to 50% of all
tokens can be padding" ("up to 89%" on GLUE-CoLA at length 128); packed training with segment
masks and per-segment positions is mathematically equivalent and gives a "2x speedup" (BERT
phase 2). Ours: the ListOps classifier of baseline 1 (dense attention, 2 blocks of width 128,
32-128 tokens padded to 129: 69% padding) trained on the same ~16k examples (500 steps) with
one example per row (`padded`, batch 32) or packed best-fit (`packed`: 12% padding, 2.87
examples per row, so batch 11 rows = 31.5 examples per step). Same steps, examples, model
and learning rate; compare accuracy (equivalence) and train steps/s and wall time (speed-up).
"""

from configs.baselines import LISTOPS_32_128, SMOKE_LISTOPS, check_preset, dotted

ROWS_PACKED = 11  # 32 examples / 2.87 examples per packed row (configs/bench/packing.py)


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Sequence packing on ListOps (32-128 tokens): padded vs packed"
  study.base = "configs/listops_short.py"
  overrides = dict(LISTOPS_32_128)
  if preset == "smoke":
    overrides.update(SMOKE_LISTOPS)
  study.variants = dotted({
      "padded": {"data.packing.enabled": False, "train.batch_size": 32},
      "packed": {"data.packing.enabled": True, "train.batch_size": ROWS_PACKED},
  })
  study.overrides = dotted(overrides)
  study.grid = dotted({"variant": ("padded", "packed"),
                       "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 0.0
  return study
