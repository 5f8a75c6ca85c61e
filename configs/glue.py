"""GLUE fine-tuning (Wang et al. 2019): one task per run, from scratch, from one of our MLM or
ELECTRA runs, or from an imported Hugging Face BERT-family checkpoint.

    tfds build glue/rte --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m experiments.main --config configs/glue.py --workdir runs/glue_rte \
        --config.data.glue.task=rte --config.data.glue.data_dir=~/tensorflow_datasets

From an imported checkpoint (its architecture, tokenizer and encoder weights):

    python -m experiments.main --config configs/glue.py:/path/to/bert-dir --workdir runs/g \
        --config.data.glue.task=mrpc

From one of our pretraining runs (MLM, ELECTRA, ModernBERT): its workdir as the argument;
the model fields (but the head), the text data settings and the tokenizer are that run's, and
its encoder is taken (`init_from.workdir`, `encoder_only`):

    python -m experiments.main --config configs/glue.py:runs/modernbert --workdir runs/g \
        --config.data.glue.task=mrpc

The argument is a model preset (tiny | small | base, as configs/base.py), one of our run
workdirs (a directory whose config.json has a `model` section), or a checkpoint directory /
packaged name (then `init_from.pretrained` and `data.glue.tokenizer` are set to it and the
model fields come from its config.json). A model pretrained without token types keeps none
(`model.type_vocab_size = 0`; set it to 2 to learn a new table, which starts at zero).
Fine-tuning follows BERT: lr 2e-5 for an imported checkpoint (1e-4 for our small models), 10%
warmup, linear decay, dropout 0.1 (a ModernBERT run keeps its own dropout settings).
"""

import json
import os

import ml_collections
from ml_collections import config_dict

from configs import base


def our_run(path: str) -> dict | None:
  """The config.json of one of our run workdirs, else None (a preset or an HF checkpoint)."""
  config_path = os.path.join(os.path.expanduser(path), "config.json")
  if not os.path.isfile(config_path):
    return None
  with open(config_path, encoding="utf-8") as f:
    record = json.load(f)
  return record if isinstance(record.get("model"), dict) and "task" in record else None


def from_run(config: ml_collections.ConfigDict, workdir: str, record: dict) -> None:
  """`config` fine-tunes the encoder of the run in `workdir` (its model, data.text, tokenizer)."""
  model = {k: v for k, v in record["model"].items() if k not in ("head", "vocab_size")}
  model["layer_pattern"] = tuple(model.get("layer_pattern") or ())
  # the run's position table: its recorded max_length, else its row length (the task's default)
  model["max_length"] = model.get("max_length") or record["data"]["text"]["seq_len"]
  for key, value in model.items():
    config.model[key] = value
  config.data.text.update(record["data"]["text"])
  config.data.glue.tokenizer = record["data"]["text"]["tokenizer"]
  config.init_from.workdir = workdir
  config.init_from.encoder_only = True


def get_config(preset: str = "small"):
  run = None if preset in base.PRESETS else our_run(preset)
  checkpoint = "" if preset in base.PRESETS or run else preset
  config = base.get_config("small" if checkpoint or run else preset)
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
  if run:
    from_run(config, preset, run)
  if checkpoint:
    from experiments import pretrained  # pylint: disable=import-outside-toplevel
    config.model.update(pretrained.model_dict(checkpoint))
    config.init_from.pretrained = checkpoint
    config.data.glue.tokenizer = checkpoint
    t.learning_rate = 2e-5
  return config
