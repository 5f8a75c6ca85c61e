"""Baseline 2: DenseFormer's depth-weighted averaging vs residual at equal and double depth.

    python -m experiments.compare --config configs/baselines/denseformer.py \
        --workdir runs/baselines/denseformer

Pagliardini et al. 2024, "DenseFormer": after each block a Depth-Weighted Average (DWA) of
the current and all earlier block outputs; a 48-block DenseFormer "outperforms" a 72-block
Transformer, i.e. DWA at depth L beats residual at depth L and approaches a deeper residual
model, at a few hundred extra parameters. Ours: MLM perplexity on the Python standard library
(configs/mlm.py, bytes, 128-token packed rows, batch 32) of the 128-wide MLM_MINI encoder:
residual with 4 blocks, DenseFormer with 4 blocks (+14 DWA weights) and residual with 8
blocks (2x the block parameters and FLOPs), 400 AdamW steps each, seeds 0-2.
"""

from configs.baselines import MLM_MINI, SMOKE_MLM, check_preset, dotted


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "DenseFormer (DWA) vs residual: MLM on the stdlib corpus"
  study.base = "configs/mlm.py:small"
  overrides = {**MLM_MINI, "train.num_steps": 400, "train.eval_every": 200,
               "train.checkpoint_every": 400}
  depth = 1 if preset == "smoke" else 4
  study.variants = dotted({
      "residual_4": {"model.num_layers": depth},
      "denseformer_4": {"model.num_layers": depth, "model.connection": dict(name="denseformer")},
      "residual_8": {"model.num_layers": 2 * depth},
  })
  seeds = (0, 1, 2)
  if preset == "smoke":
    overrides.update(SMOKE_MLM)
    seeds = (0,)
  study.overrides = dotted(overrides)
  study.grid = dotted({"variant": ("residual_4", "denseformer_4", "residual_8"), "seed": seeds})
  study.primary_metric = "perplexity"
  study.mode = "min"
  study.param_tolerance = 1.0  # residual_8 is the deeper model by design
  return study
