"""LRA Retrieval (Tay et al. 2021): do two papers cite each other? AAN pairs, bytes, two towers.

    python -m experiments.main --config configs/lra/retrieval.py --workdir runs/lra/retrieval \
        --config.data.aan.dir=lra_release/tsv_data
    python -m experiments.main --config configs/lra/retrieval.py:smoke --workdir /tmp/lra_ret

Data: LRA's released new_aan_pairs.{train,eval,test}.tsv (experiments/data/aan.py), 4,000 bytes
per document and no CLS (LRA's dual encoder adds none). Task `match`: one shared encoder for
both documents; the head as LRA's `classifier_head_dual` runs it: the first position of each
document (LRA's CLS pooling over rows without a CLS), [u, v] concatenated (LRA's code never
switches its NLI interaction on), Dense(512) -> ReLU -> Dense(256) -> ReLU -> Dense, no
dropout (encoders/heads/pair.py). Model and training as LRA's matching/transformer_base.py over
base_match_config.py: 4 layers, 4 heads, width 128, qkv_dim 128, MLP 512, dropout 0.1,
sinusoidal positions; batch 32, 5K steps, rsqrt schedule (base 0.05, 8K warmup: LRA's warmup
is longer than its run, so the rate never peaks), weight decay 0.1. Ours as options:
`data.aan.cls=True`, `model.head.interaction="nli"` ([u, v, u*v, u-v]), `model.head.dropout`.

Still differs from LRA's code: LRA's byte encoder is TFDS's, ours maps byte b to token b + 4
(the same bytes, other ids); LRA evaluates every 100 steps, we every 500.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="aan", pooling="cls", position="sinusoidal",
                          dim=128, num_layers=4, num_heads=4, qkv_dim=128, mlp_dim=512)
  config.task = "match"
  config.data.aan.update(max_length=4_000, cls=False)
  config.model.head = dict(name="pair_classification", pooling="cls", interaction="concat",
                           dropout=False, num_classes=0)
  config.train.update(batch_size=32, num_steps=5_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=8_000, weight_decay=0.1, eval_every=500,
                      checkpoint_every=500)
  if preset == "smoke":
    config.data.aan.update(max_length=64, max_train=32, max_eval=16)
    lra.smoke(config)
  return config
