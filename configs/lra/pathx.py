"""LRA Path-X (Tay et al. 2021): Pathfinder at 128x128 pixels, 16,384 tokens.

    python -m experiments.main --config configs/lra/pathx.py --workdir runs/lra/pathx
    python -m experiments.main --config configs/lra/pathx.py:smoke --workdir /tmp/lra_pathx

Data: our reimplementation of the original generator at LRA's Pathfinder128 settings
(`curv_contour_length_14`; experiments/data/pathfinder.py) or LRA's release:
`--config.data.pathfinder.lra_dir=lra_release/pathfinder128/curv_contour_length_14`; pixel 0 is
padding. Model and training as LRA's pathfinder128/transformer_base.py, which keeps
base_pathfinder128_config.py's model: 1 layer, 2 heads, width 32, qkv_dim 16, MLP 32, dropout
0.1, learned positions, mean pooling, LRA's classifier head; batch 64, 500K steps (200 epochs of
160k), Adam lr 1e-3 with 2,500 steps of warmup and cosine decay, gradient clipping at norm 1.0.
LRA's paper reports every model it ran at chance on Path-X (Table 1). Variant presets swap
LRA's attention in (LRA has no per-variant Path-X files). The `smoke` preset runs `local`
attention (128-token blocks): dense scores at 16K tokens are a 1 GB matrix per head and example,
beyond a quick CPU check.

Still differs from LRA's code: as configs/lra/pathfinder.py (our generator's random streams and
first-160k / next-20k / last-20k splits); we evaluate every 25K steps, LRA every 2,500.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="pathfinder", pooling="mean", position="learned",
                          dim=32, num_layers=1, num_heads=2, qkv_dim=16, mlp_dim=32)
  config.data.pathfinder.size = 128
  config.data.pixel_zero_is_padding = True
  config.train.update(batch_size=64, num_steps=500_000, schedule="cosine", learning_rate=1e-3,
                      warmup_steps=2_500, weight_decay=0.0, grad_clip_norm=1.0,
                      eval_every=25_000, checkpoint_every=25_000)
  config.eval.batch_size = 64
  if preset == "smoke":
    config.data.pathfinder.update(num_train=8, num_eval=4)
    config.model.attention = dict(name="local", block_size=128)
    lra.smoke(config)
    config.train.batch_size = 2
    config.eval.batch_size = 2
  return config
