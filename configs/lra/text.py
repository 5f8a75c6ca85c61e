"""LRA Text (Tay et al. 2021): IMDB sentiment from bytes (imdb_reviews in TFDS), binary.

    tfds build imdb_reviews --file_format=array_record   # once, with network
    python -m experiments.main --config configs/lra/text.py --workdir runs/lra/text
    python -m experiments.main --config configs/lra/text.py:smoke --workdir /tmp/lra_text

Length: the paper truncates to 4,000 bytes (Section 3.3; `data.tfds.max_length` = 4000 here,
CLS included); LRA's released base_tc_config says max_length = 1000: run that with
`--config.data.tfds.max_length=1000`. Model and training as base_tc_config: 4 layers, 4 heads,
width 256, MLP 1024, batch 32, 20K steps, rsqrt schedule (base 0.05, 8K warmup), weight decay
0.1, CLS pooling. IMDB has no validation split: as LRA, we evaluate on test, so
`eval.select_best` picks on test too (optimistic); for a clean protocol hold out part of train:
`--config.data.tfds.train_split='train[:90%]' --config.data.tfds.eval_split='train[90%:]'`.
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="tfds", pooling="cls", position="learned",
                          dim=256, num_layers=4, num_heads=4, qkv_dim=256, mlp_dim=1024)
  config.data.tfds.update(name="imdb_reviews", train_split="train", eval_split="test",
                          test_split="test", max_length=4_000)
  config.train.update(batch_size=32, num_steps=20_000, schedule="rsqrt", learning_rate=0.05,
                      warmup_steps=8_000, weight_decay=0.1, eval_every=1_000,
                      checkpoint_every=1_000)
  if preset == "smoke":
    config.data.tfds.update(max_length=64, max_train=32, max_eval=16)
    lra.smoke(config)
  return config
