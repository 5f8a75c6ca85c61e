"""LRA ListOps (Tay et al. 2021): 10-way classification of nested list expressions, 2K tokens.

    python -m experiments.main --config configs/lra/listops.py --workdir runs/lra/listops
    python -m experiments.main --config configs/lra/listops.py:smoke --workdir /tmp/lra_listops

Data: our seeded generator with LRA's settings (500-2,000 tokens, 96k/2k/2k; experiments/data/
listops.py), or LRA's released files: `--config.data.listops.lra_dir=lra_release/listops-1000`
(basic_{train,val,test}.tsv). Model and training as LRA's listops/transformer_base.py over
base_listops_config.py: 4 layers, 8 heads, width 512, qkv_dim 512, MLP 1024, dropout 0.1,
sinusoidal positions (the encoder's learn_pos_emb default, False), CLS pooling, LRA's classifier
head; batch 32, 5K steps, rsqrt schedule (base 0.05, 1K warmup), weight decay 0.1. The `paper`
preset is the paper's appendix size (6 layers, MLP 2048); variant presets swap LRA's attention
in (LRA's listops/<variant>_base.py files change nothing else).

Still differs from LRA's code: LRA prepends a learned CLS vector after the embedding, we a CLS
token (the same position, an embedded id instead of a free vector); LRA evaluates every 50 steps
on the whole validation set, we every 500.
"""

from configs import lra

PRESETS = lra.PRESETS + ("paper",)


def get_config(preset: str = "full"):
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  config = lra.lra_config("full" if preset == "paper" else preset, source="listops",
                          pooling="cls", position="sinusoidal", dim=512, num_layers=4,
                          num_heads=8, qkv_dim=512, mlp_dim=1024)
  if preset == "paper":
    config.model.update(num_layers=6, mlp_dim=2048)
  config.train.update(batch_size=32, num_steps=5_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=1_000, weight_decay=0.1, eval_every=500,
                      checkpoint_every=500)
  if preset == "smoke":
    config.data.listops.update(num_train=64, num_eval=16, min_length=16, max_length=64,
                               max_depth=3)
    lra.smoke(config)
  return config
