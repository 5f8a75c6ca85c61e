"""LRA Pathfinder (Tay et al. 2021): are the two markers connected by a contour? 32x32 pixels.

    python -m experiments.main --config configs/lra/pathfinder.py --workdir runs/lra/pathfinder
    python -m experiments.main --config configs/lra/pathfinder.py:smoke --workdir /tmp/lra_pf

Data: our seeded generator with LRA's hard setting (14 dashes per contour; 160k/20k/20k;
experiments/data/pathfinder.py), or LRA's released images:
`--config.data.pathfinder.lra_dir=lra_release/pathfinder32/curv_contour_length_14`. A pixel
value v is token v + 4 (1,024 tokens, no CLS). Model and training as base_pathfinder32_config:
1 layer, 2 heads, width 32, per-head width 8 (qkv_dim 16), MLP 32, dropout 0.1, mean pooling,
sinusoidal positions (learn_pos_emb = False), batch 512, 62.4K steps (200 epochs), Adam lr 1e-3
with one epoch (312 steps) of warmup and cosine decay, no weight decay.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="pathfinder", pooling="mean", position="sinusoidal",
                          dim=32, num_layers=1, num_heads=2, qkv_dim=16, mlp_dim=32)
  config.train.update(batch_size=512, num_steps=62_400, schedule="cosine", learning_rate=1e-3,
                      warmup_steps=312, weight_decay=0.0, eval_every=3_120,
                      checkpoint_every=3_120)
  config.eval.batch_size = 512
  if preset == "smoke":
    config.data.pathfinder.update(num_train=32, num_eval=8)
    lra.smoke(config)
  return config
