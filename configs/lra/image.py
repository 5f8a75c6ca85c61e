"""LRA Image (Tay et al. 2021): CIFAR-10 as 1,024 grayscale pixel tokens, 10 classes.

    tfds build cifar10 --file_format=array_record   # once, with network
    python -m experiments.main --config configs/lra/image.py --workdir runs/lra/image
    python -m experiments.main --config configs/lra/image.py:smoke --workdir /tmp/lra_image

Data: TFDS cifar10, train[:90%] / train[90%:] / test as LRA, grayscale (experiments/data/
tfds_image.py); a pixel value v is token v + 4 and rows have no CLS. Model and training as
base_cifar10_config: 1 layer, 1 head, width 32, MLP 64, dropout 0.3, attention dropout 0.2,
batch 256, 35K steps (200 epochs), Adam lr 5e-4 with one epoch (175 steps) of warmup and cosine
decay, no weight decay, learned positions. LRA pools a prepended CLS; our pixel rows have none,
so we pool the mean (as LRA's Pathfinder).
"""

from configs import lra


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="image", pooling="mean", position="learned",
                          dim=32, num_layers=1, num_heads=1, qkv_dim=32, mlp_dim=64,
                          dropout=0.3, attention_dropout=0.2)
  config.train.update(batch_size=256, num_steps=35_000, schedule="cosine", learning_rate=5e-4,
                      warmup_steps=175, weight_decay=0.0, eval_every=1_750,
                      checkpoint_every=1_750)
  config.eval.batch_size = 256
  if preset == "smoke":
    config.data.image.update(train_split="train[:32]", eval_split="train[32:48]",
                             test_split="test[:16]")
    lra.smoke(config)
  return config
