"""LRA Pathfinder (Tay et al. 2021): are the two markers connected by a contour? 32x32 pixels.

    python -m experiments.main --config configs/lra/pathfinder.py --workdir runs/lra/pathfinder
    python -m experiments.main --config configs/lra/pathfinder.py:smoke --workdir /tmp/lra_pf

Data: our reimplementation of the original generator at LRA's Pathfinder32 hard setting
(`curv_contour_length_14`, 160k/20k/20k; experiments/data/pathfinder.py), or LRA's released
images: `--config.data.pathfinder.lra_dir=lra_release/pathfinder32/curv_contour_length_14`. A
pixel value v is token v + 4 (1,024 tokens, no CLS) and pixel 0 is padding (LRA's `inputs > 0`
mask). Model as LRA's pathfinder32/transformer_base.py (the published Transformer row): 4
layers, 4 heads, width 32, qkv_dim 16 (per head 4), MLP 32, dropout 0.2, attention dropout 0.1,
sinusoidal positions (learn_pos_emb = False), mean pooling over every position, LRA's
classifier head; training as base_pathfinder32_config: batch 512, 62.4K steps (200 epochs), Adam
lr 1e-3 with one epoch (312 steps) of linear warmup and cosine decay, no weight decay, no
clipping. Variant presets: LRA's pathfinder32/<variant>_base.py sizes (local: 2 layers, 4 heads,
width 64; bigbird: 4 layers, 2 heads, width 64; performer: 4 layers, 8 heads; ...).

Still differs from LRA's code: our generator draws new images from its own random streams (the
rules and LRA's settings are the original's; see the generator's docstring), and its splits are
the first 160k / next 20k / last 20k images, where LRA's are TFDS's `[:80%]`, `[80%:90%]`,
`[90%:]` of its example order (the reader of LRA's folder keeps metadata order); LRA evaluates
every 312 steps, we every 3,120.
"""

from configs import lra

# LRA's pathfinder32/<variant>_base.py sizes (the others keep transformer_base's).
SIZES = {
    "local": dict(num_layers=2, num_heads=4, dim=64, qkv_dim=32, mlp_dim=64, dropout=0.1),
    "bigbird": dict(num_layers=4, num_heads=2, dim=64, qkv_dim=32, mlp_dim=64, dropout=0.2),
    "performer": dict(num_layers=4, num_heads=8, dim=32, qkv_dim=16, mlp_dim=32, dropout=0.2),
    "linformer": dict(num_layers=1, num_heads=2, dim=32, qkv_dim=16, mlp_dim=32, dropout=0.2),
    "linear_transformer": dict(num_layers=1, num_heads=2, dim=128, qkv_dim=64, mlp_dim=128,
                               dropout=0.2),
    "longformer": dict(num_layers=2, num_heads=2, dim=32, qkv_dim=16, mlp_dim=32, dropout=0.1),
    "sparse_transformer": dict(num_layers=1, num_heads=8, dim=32, qkv_dim=16, mlp_dim=32,
                               dropout=0.2),
}


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="pathfinder", pooling="mean", position="sinusoidal",
                          dim=32, num_layers=4, num_heads=4, qkv_dim=16, mlp_dim=32,
                          dropout=0.2, sizes=SIZES)
  config.data.pixel_zero_is_padding = True
  config.train.update(batch_size=512, num_steps=62_400, schedule="cosine", learning_rate=1e-3,
                      warmup_steps=312, weight_decay=0.0, eval_every=3_120,
                      checkpoint_every=3_120)
  config.eval.batch_size = 512
  if preset == "smoke":
    config.data.pathfinder.update(num_train=32, num_eval=8)
    lra.smoke(config)
  return config
