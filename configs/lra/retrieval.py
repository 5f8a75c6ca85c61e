"""LRA Retrieval (Tay et al. 2021): do two papers cite each other? AAN pairs, bytes, two towers.

    python -m experiments.main --config configs/lra/retrieval.py --workdir runs/lra/retrieval \
        --config.data.aan.dir=lra_release/tsv_data
    python -m experiments.main --config configs/lra/retrieval.py:smoke --workdir /tmp/lra_ret

Data: LRA's released new_aan_pairs.{train,eval,test}.tsv (experiments/data/aan.py), 4,000 bytes
per document. Task `match`: one shared encoder for both documents, LRA's [u, v, u*v, u-v] MLP
head (encoders/heads/pair.py). Model and training as base_match_config: 4 layers, 4 heads, width
128, MLP 512, batch 32, 5K steps, rsqrt schedule (base 0.05, 8K warmup: LRA's warmup is longer
than its run, so the rate never peaks), weight decay 0.1, CLS pooling.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="aan", pooling="cls", position="learned",
                          dim=128, num_layers=4, num_heads=4, qkv_dim=128, mlp_dim=512)
  config.task = "match"
  config.data.aan.update(max_length=4_000)
  config.model.head = dict(name="pair_classification", pooling="cls", interaction="nli",
                           num_classes=0)
  config.train.update(batch_size=32, num_steps=5_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=8_000, weight_decay=0.1, eval_every=500,
                      checkpoint_every=500)
  if preset == "smoke":
    config.data.aan.update(max_length=64, max_train=32, max_eval=16)
    lra.smoke(config)
  return config
