"""ELECTRA pretraining (Clark et al. 2020): generator MLM + replaced-token detection, packed.

    python -m experiments.main --config configs/electra.py:small --workdir runs/electra

The generator is 1/4 of the discriminator's width (ELECTRA-Small's ratio); the discriminator is
our Encoder with any attention variant (`--config.model.attention.name=local`). The cheap
variant without a generator network (replacements from the corpus unigram distribution):
`--config.electra.generator=unigram`. Fine-tuning loads params["discriminator"]["encoder"].
"""

from configs import mlm


def get_config(preset: str = "small"):
  """configs/mlm.py's data, packing and training budget, with the ELECTRA objective."""
  config = mlm.get_config(preset)
  config.task = "electra"
  config.model.head = dict(name="rtd")
  config.mlm.update(mask_rate=0.15, mask_fraction=0.85, random_fraction=0.0)  # ELECTRA's masking
  config.electra.update(generator="mlm", width_fraction=0.25, disc_weight=50.0)
  return config
