"""LRA ListOps (Tay et al. 2021): 10-way classification of nested list expressions, 2K tokens.

    python -m experiments.main --config configs/lra/listops.py --workdir runs/lra/listops
    python -m experiments.main --config configs/lra/listops.py:smoke --workdir /tmp/lra_listops

Data: our seeded generator with LRA's settings (500-2,000 tokens, 96k/2k/2k; experiments/data/
listops.py), or LRA's released files: `--config.data.listops.lra_dir=lra_release/listops-1000`
(basic_{train,val,test}.tsv). Model and training as LRA's base_listops_config: 6 layers, 8 heads,
width 512, MLP 2048, batch 32, 5K steps, rsqrt schedule (base 0.05, 1K warmup), weight decay 0.1,
CLS pooling, learned positions.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="listops", pooling="cls", position="learned",
                          dim=512, num_layers=6, num_heads=8, qkv_dim=512, mlp_dim=2048)
  config.train.update(batch_size=32, num_steps=5_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=1_000, weight_decay=0.1, eval_every=500,
                      checkpoint_every=500)
  if preset == "smoke":
    config.data.listops.update(num_train=64, num_eval=16, min_length=16, max_length=64,
                               max_depth=3)
    lra.smoke(config)
  return config
