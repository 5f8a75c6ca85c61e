"""LRA ListOps (Tay et al. 2021) on our seeded generator: 10-way classification.

    python -m experiments.main --config configs/listops.py:small --workdir runs/listops

Presets after the colon: tiny | small | base (model size). The LRA sizes (500-2000 tokens,
96k examples) are the default data; shrink with e.g. `--config.data.listops.max_length=512`.
"""

from configs import base


def get_config(preset: str = "small"):
  config = base.get_config(preset)
  config.task = "classify"
  config.data.source = "listops"
  config.model.head = dict(name="classification", pooling="cls", num_classes=0)
  config.model.position = dict(name="learned")
  config.train.batch_size = 32
  config.train.num_steps = 5_000
  config.train.learning_rate = 5e-4
  config.train.warmup_steps = 500
  config.train.eval_every = 1_000
  config.train.checkpoint_every = 1_000
  return config
