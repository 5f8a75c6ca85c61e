"""Pathfinder-32 at CPU scale: dense vs local, BigBird and Performer attention (3 seeds).

    python -m experiments.compare --config configs/baselines/lra_pathfinder_cpu.py \
        --workdir runs/baselines/lra_pathfinder_cpu

Tay et al. 2021 (LRA, Table 1, Pathfinder): Transformer 71.40, Local 66.63, BigBird 74.87,
Performer 77.05 (chance 50), after 62.4K steps of 512 images (32M examples). Ours: 32x32 images
(1,024 pixel tokens, pixel 0 as padding) from our reimplementation of the original generator at
LRA's hard setting (experiments/data/pathfinder.py, 14-paddle contours); 20k training images,
1k validation, 1k test. Model: the one of LRA's base_pathfinder32_config.py (1 layer, 2 heads,
width 32, qkv_dim 16, MLP 32, mean pooling, sinusoidal positions, LRA's classifier head; Adam lr
1e-3, cosine), without dropout, for every variant (LRA's published rows used
transformer_base.py and per-variant sizes, 4 layers for most: about 4x this cost); batch 16,
300 steps (4,800 images), best validation checkpoint tested. This is what 2 CPU cores run in
about half an hour: dense attention at 1,024 tokens costs about 1 s per step of 16 images here.
Block-sparse variants use 64-token blocks (two image rows); local sees its block and one on each
side (192 tokens, 6 rows).
"""

from configs.baselines import check_preset, dotted

BLOCK = 64


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Pathfinder-32 (generated, LRA's hard setting): attention variants"
  study.base = "configs/lra/pathfinder.py"
  overrides = {
      "data.pathfinder.num_train": 20_000, "data.pathfinder.num_eval": 1_000,
      "data.pathfinder.contour_length": 14, "model.num_layers": 1, "model.num_heads": 2,
      "model.head_dim": 8, "model.dim": 32, "model.mlp_dim": 32, "model.dropout_rate": 0.0,
      "model.attention_dropout_rate": 0.0, "train.batch_size": 16, "train.num_steps": 300,
      "train.learning_rate": 1e-3, "train.warmup_steps": 30, "train.eval_every": 150,
      "train.checkpoint_every": 150, "train.log_every": 50, "eval.batch_size": 100,
      "progress_bar": False}
  seeds = (0, 1, 2)
  if preset == "smoke":
    overrides.update({"data.pathfinder.num_train": 64, "data.pathfinder.num_eval": 16,
                      "model.dim": 16, "model.num_heads": 2, "model.head_dim": 8,
                      "model.mlp_dim": 32, "model.num_layers": 1, "train.batch_size": 8,
                      "train.num_steps": 2, "train.warmup_steps": 1, "train.eval_every": 2,
                      "train.checkpoint_every": 2, "train.log_every": 1, "eval.batch_size": 8})
    seeds = (0,)
  study.overrides = dotted(overrides)
  study.variants = dotted({
      "dense": {"model.attention": dict(name="dense")},
      "local": {"model.attention": dict(name="local", block_size=BLOCK, window=1)},
      "bigbird": {"model.attention": dict(name="bigbird", block_size=BLOCK)},
      "performer": {"model.attention": dict(name="performer", num_features=64)},
  })
  variants = tuple(study.variants) if preset == "full" else ("dense", "local")
  study.grid = dotted({"variant": variants, "seed": seeds})
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 0.05
  return study
