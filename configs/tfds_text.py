"""Text classification from any TFDS dataset prepared as ArrayRecord (no TensorFlow needed).

    tfds build imdb_reviews --file_format=array_record   # once, needs the network
    python -m experiments.main --config configs/tfds_text.py:small --workdir runs/imdb

Other datasets: `--config.data.tfds.name=glue/sst2 --config.data.tfds.text_key=sentence
--config.data.tfds.eval_split=validation`.
"""

from configs import base


def get_config(preset: str = "small"):
  config = base.get_config(preset)
  config.task = "classify"
  config.data.source = "tfds"
  config.model.head = dict(name="classification", pooling="mean", num_classes=0)
  config.train.num_steps = 2_000
  config.train.learning_rate = 5e-4
  return config
