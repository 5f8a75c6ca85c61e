"""Baseline 1a: LRA ListOps accuracy of every attention variant at equal parameters.

    python -m experiments.compare --config configs/baselines/lra_listops.py \
        --workdir runs/baselines/lra_listops

Tay et al. 2021, "Long Range Arena" (Table 1, ListOps accuracy): Transformer 36.37, Local
15.82, Sparse Trans. 17.07, Longformer 35.63, Linformer 35.70, BigBird 36.05, Linear Trans.
16.13, Performer 18.01. LRA's ListOps has 500-2,000 tokens; ours is generated and seeded
(experiments/data/listops.py) with 32-128 tokens, nesting depth <= 3, so a 2-block, 128-wide
encoder learns it within the CPU budget. Every cell is the same model and budget with one
attention variant; block-sparse patterns use 16-token blocks (8 blocks per row), so each
sparse variant sees a fraction of the row per layer, as in LRA. Parameters are equal except
Linformer's length projections (+5.5%). Seeds 0-2 vary the initialisation. A step with a
non-finite loss or gradient is skipped (`train.on_nonfinite = "skip"`, counted as
`skipped_steps`): Performer's random features overflowed once at lr 1e-3.
"""

from configs.baselines import LISTOPS_32_128, SMOKE_LISTOPS, check_preset, dotted

BLOCK = 16


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "LRA ListOps (32-128 tokens): attention variants at equal parameters"
  study.base = "configs/listops_short.py"
  overrides = {**LISTOPS_32_128, "train.batch_size": 32,
               "train.on_nonfinite": "skip"}  # (results.csv: skipped steps per cell)
  study.variants = dotted({  # LRA's names -> our registered variants
      "transformer": {"model.attention": dict(name="dense")},
      "local": {"model.attention": dict(name="local", block_size=BLOCK, window=1)},
      "sparse_transformer": {"model.attention": dict(name="strided", block_size=BLOCK)},
      "longformer": {"model.attention": dict(name="longformer", block_size=BLOCK, window=1)},
      "linformer": {"model.attention": dict(name="linformer", k=32)},
      "bigbird": {"model.attention": dict(name="bigbird", block_size=BLOCK)},
      "linear_transformer": {"model.attention": dict(name="linear")},
      "performer": {"model.attention": dict(name="performer", num_features=64)},
  })
  seeds = (0, 1, 2)
  if preset == "smoke":
    overrides.update({**SMOKE_LISTOPS, "train.batch_size": 8})
    seeds = (0,)
  study.overrides = dotted(overrides)
  variants = tuple(study.variants)
  if preset == "smoke":  # (every variant's full cell is validated by tests/test_baselines.py)
    variants = ("transformer", "longformer", "linformer")
  study.grid = dotted({"variant": variants, "seed": seeds})
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 0.06  # Linformer's projections
  return study
