"""GLUE (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding") from TFDS's `glue/<task>` configs, read without TensorFlow.

The nine tasks, their text features, label kind and evaluation splits are in `TASKS`. The data
must be prepared once as ArrayRecord (this code never downloads):

    tfds build glue/<task> --data_dir=DIR --file_format=array_record

A sentence becomes `[CLS] a [SEP]` (token types 0); a pair `[CLS] a [SEP] b [SEP]` with types
0 for the first part and 1 for `b [SEP]`, as BERT (Devlin et al. 2019); pairs longer than
`max_length` lose tokens from the longer text first. Any tokenizer with `encode(str) -> ids`
(no special tokens) and `CLS_ID`, `SEP_ID`, `PAD_ID` works: bytes, our WordPiece, or a
checkpoint's (experiments/data/hf_files.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from encoders.errors import ConfigError
from experiments.data import tfds_text


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  texts: tuple[str, ...]  # one feature (single sentence) or two (pair)
  num_classes: int  # 0: regression (STS-B's similarity in [0, 5])
  eval_splits: tuple[str, ...] = ("validation",)


TASKS = {
    "cola": TaskSpec(("sentence",), 2),
    "sst2": TaskSpec(("sentence",), 2),
    "mrpc": TaskSpec(("sentence1", "sentence2"), 2),
    "qqp": TaskSpec(("question1", "question2"), 2),
    "stsb": TaskSpec(("sentence1", "sentence2"), 0),
    "mnli": TaskSpec(("premise", "hypothesis"), 3,
                     ("validation_matched", "validation_mismatched")),
    "qnli": TaskSpec(("question", "sentence"), 2),
    "rte": TaskSpec(("sentence1", "sentence2"), 2),
    "wnli": TaskSpec(("sentence1", "sentence2"), 2),
}


def task(name: str) -> TaskSpec:
  if name not in TASKS:
    raise ConfigError(f"data.glue.task={name!r}; allowed: {', '.join(TASKS)}")
  return TASKS[name]


def encode_pair(first: np.ndarray, second: np.ndarray | None, max_length: int,
                tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, type ids) of `[CLS] first [SEP] (second [SEP])`, truncated longest-first."""
  budget = max_length - (2 if second is None else 3)
  if second is None:
    first = first[:budget]
  else:
    a, b = len(first), len(second)
    while a + b > budget:
      if a >= b:
        a -= 1
      else:
        b -= 1
    first, second = first[:a], second[:b]
  tokens = [tokenizer.CLS_ID, *first, tokenizer.SEP_ID]
  types = [0] * len(tokens)
  if second is not None:
    tokens += [*second, tokenizer.SEP_ID]
    types += [1] * (len(second) + 1)
  return np.asarray(tokens, np.int32), np.asarray(types, np.int32)


def load_glue(name: str, split: str, *, tokenizer, max_length: int, data_dir: str | None,
              max_examples: int = 0) -> dict[str, np.ndarray]:
  """One split of `glue/<name>`: {"inputs", "type_ids": int32 [N, max_length], "labels":
  int32 [N] (float32 for STS-B)}, PAD-padded, in the stored order."""
  spec = task(name)
  if max_length < len(spec.texts) + 2:
    raise ConfigError(f"data.glue.max_length={max_length}; must be >= {len(spec.texts) + 2}")
  source = source_of(name, split, data_dir)
  num = len(source) if not max_examples else min(len(source), max_examples)
  inputs = np.full((num, max_length), tokenizer.PAD_ID, np.int32)
  type_ids = np.zeros((num, max_length), np.int32)
  labels = np.empty((num,), np.float32 if spec.num_classes == 0 else np.int32)
  for row in range(num):
    example = source[row]
    parts = [np.asarray(tokenizer.encode(tfds_text.to_str(example[k])), np.int32)
             for k in spec.texts]
    tokens, types = encode_pair(parts[0], parts[1] if len(parts) > 1 else None, max_length,
                                tokenizer)
    inputs[row, :len(tokens)], type_ids[row, :len(types)] = tokens, types
    labels[row] = np.asarray(example["label"])
  if spec.num_classes and num and labels.min() < 0:
    raise ConfigError(f"data.glue: split {split!r} of glue/{name} is unlabelled (a test split); "
                      "use train or validation splits")
  return {"inputs": inputs, "type_ids": type_ids, "labels": labels}


def source_of(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` of glue/<name>; missing data is one line with the command to build it."""
  tfds = tfds_text.tfds_module()  # glue registered with the text datasets
  try:
    return tfds.data_source(f"glue/{name}", split=split, data_dir=data_dir, download=False)
  except (NotImplementedError, KeyError, tfds.core.DatasetNotFoundError, FileNotFoundError):
    where = data_dir or "TFDS's default data dir (~/tensorflow_datasets)"
    raise ConfigError(
        f"data.glue: glue/{name} ({split}) is not prepared as ArrayRecord in {where}; prepare "
        f"it once with `tfds build glue/{name} --data_dir {data_dir or '~/tensorflow_datasets'}"
        " --file_format=array_record`") from None
