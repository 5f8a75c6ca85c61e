"""LRA Text (Tay et al. 2021): IMDB sentiment from bytes (imdb_reviews in TFDS), binary.

    tfds build imdb_reviews --file_format=array_record   # once, with network
    python -m experiments.main --config configs/lra/text.py --workdir runs/lra/text
    python -m experiments.main --config configs/lra/text.py:smoke --workdir /tmp/lra_text

Length: the paper's 4,000 bytes (Section 3.3) plus the CLS LRA's encoder prepends
(`data.tfds.max_length` = 4001 here: our rows count their CLS token); LRA's released
base_tc_config says max_length = 1000: run that with `--config.data.tfds.max_length=1001`.
Model and training as LRA's text_classification/transformer_base.py over base_tc_config.py: 4
layers, 4 heads, width 256, qkv_dim 256, MLP 1024, dropout 0.1, sinusoidal positions (the
encoder's learn_pos_emb default, False), CLS pooling, LRA's classifier head; batch 32, 20K
steps, rsqrt schedule (base 0.05, 8K warmup), weight decay 0.1. Variant presets swap LRA's
attention in (LRA's text <variant>_base.py files change nothing else).

Still differs from LRA's code: IMDB has no validation split and, as LRA, we evaluate on test,
so `eval.select_best` picks on test too (optimistic); for a clean protocol hold out part of
train: `--config.data.tfds.train_split='train[:90%]' --config.data.tfds.eval_split='train[90%:]'`.
LRA's CLS is a learned vector prepended after the embedding, ours a CLS token; LRA's byte
encoder is TFDS's, ours maps byte b to token b + 4 (the same bytes, other ids).
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="tfds", pooling="cls", position="sinusoidal",
                          dim=256, num_layers=4, num_heads=4, qkv_dim=256, mlp_dim=1024)
  config.data.tfds.update(name="imdb_reviews", train_split="train", eval_split="test",
                          test_split="test", max_length=4_001)
  config.train.update(batch_size=32, num_steps=20_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=8_000, weight_decay=0.1, eval_every=1_000,
                      checkpoint_every=1_000)
  if preset == "smoke":
    config.data.tfds.update(max_length=64, max_train=32, max_eval=16)
    lra.smoke(config)
  return config
