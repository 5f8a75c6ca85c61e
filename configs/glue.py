"""GLUE fine-tuning (Wang et al. 2019): one task per run, from scratch, from one of our MLM or
ELECTRA runs, or from an imported Hugging Face BERT-family checkpoint.

    tfds build glue/rte --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m experiments.main --config configs/glue.py --workdir runs/glue_rte \
        --config.data.glue.task=rte --config.data.glue.data_dir=~/tensorflow_datasets

From an imported checkpoint (its architecture, tokenizer and encoder weights):

    python -m experiments.main --config configs/glue.py:/path/to/bert-dir --workdir runs/g \
        --config.data.glue.task=mrpc

From our pretraining run (same model fields and tokenizer as that run, its encoder taken):

    python -m experiments.main --config configs/glue.py:small --workdir runs/g \
        --config.init_from.workdir=runs/mlm --config.init_from.encoder_only=true

The argument is a model preset (tiny | small | base, as configs/base.py) or a checkpoint
directory / packaged name (then `init_from.pretrained` and `data.glue.tokenizer` are set to
it and the model fields come from its config.json). Fine-tuning follows BERT: lr 2e-5 for an
imported checkpoint (1e-4 for our small models), 10% warmup, linear decay, dropout 0.1.
"""

import ml_collections
from ml_collections import config_dict

from configs import base


def get_config(preset: str = "small"):
  checkpoint = "" if preset in base.PRESETS else preset
  config = base.get_config("small" if checkpoint else preset)
  config.task = "glue"
  config.data.source = "tfds"
  config.data.glue = ml_collections.ConfigDict(dict(
      task="rte",  # cola | sst2 | mrpc | qqp | stsb | mnli | qnli | rte | wnli
      data_dir=config_dict.placeholder(str),  # TFDS data dir holding glue/<task> as ArrayRecord
      tokenizer="bytes",  # bytes | wordpiece (data.text's corpus) | a checkpoint dir / name
      max_length=128,  # tokens per example, [CLS] and [SEP]s included
      max_train=0,  # cap on training examples (0 = all)
      max_eval=0,  # cap on validation examples per split (0 = all)
  ))
  config.model.type_vocab_size = 2  # sentence A / B
  config.model.position = dict(name="learned")
  config.model.head = dict(name="classification", pooling="cls", num_classes=0)
  t = config.train
  t.batch_size = 32
  t.num_steps = 1_000
  t.schedule = "linear"
  t.learning_rate = 1e-4
  t.warmup_steps = t.get_ref("num_steps") // 10
  t.eval_every = t.checkpoint_every = 500
  if checkpoint:
    from experiments import pretrained  # pylint: disable=import-outside-toplevel
    config.model.update(pretrained.model_dict(checkpoint))
    config.init_from.pretrained = checkpoint
    config.data.glue.tokenizer = checkpoint
    t.learning_rate = 2e-5
  return config
