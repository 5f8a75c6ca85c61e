"""ELECTRA pretraining (Clark et al. 2020): generator MLM + replaced-token detection, packed.

    python -m experiments.main --config configs/electra.py:small --workdir runs/electra

The generator is 1/4 of the discriminator's width (ELECTRA-Small's ratio); the discriminator is
our Encoder with any attention variant (`--config.model.attention.name=local`). The cheap
variant without a generator network (replacements from the corpus unigram distribution):
`--config.electra.generator=unigram`. Fine-tuning loads params["discriminator"]["encoder"].
"""

from configs import base


def get_config(preset: str = "small"):
  config = base.get_config(preset)
  config.task = "electra"
  config.data.source = "text"
  config.data.text.seq_len = 128
  config.data.packing.enabled = True
  config.model.head = dict(name="rtd")
  config.mlm.update(mask_rate=0.15, mask_fraction=0.85, random_fraction=0.0)  # ELECTRA's masking
  config.electra.update(generator="mlm", width_fraction=0.25, disc_weight=50.0)
  config.train.batch_size = 32
  config.train.num_steps = 2_000
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 200
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config
