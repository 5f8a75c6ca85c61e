"""LRA's byte-level document matching data: ACL Anthology Network citation pairs (Radev et al.
2013), as released by Tay et al. 2021, "Long Range Arena" (`lra_release/tsv_data/
new_aan_pairs.{train,eval,test}.tsv`).

Each line is `label<TAB>id1<TAB>id2<TAB>text1<TAB>text2` (no header, no quoting; label 1 when
one paper cites the other, as a float "0.0"/"1.0"). Each text becomes CLS (unless `cls` is
False) + its UTF-8 bytes (ByteTokenizer, so byte b is token b + 4), truncated to `max_length`
tokens and padded; LRA truncated to 4,000 tokens of its own byte encoder and its dual encoder
adds no CLS (`cls=False`, `max_length=4000`). The two documents of a pair are stored side
by side in one row, `inputs` [N, 2 * max_length], which the match task splits into its two
towers (experiments/tasks/match.py).
"""

from __future__ import annotations

import os

import numpy as np

from encoders.errors import ConfigError
from experiments.data import lra_release
from experiments.data.tokenizers import ByteTokenizer

FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
         "test": "new_aan_pairs.test.tsv"}
NUM_CLASSES = 2


def _row(tokenizer: ByteTokenizer, text: str, max_length: int, cls: bool) -> np.ndarray:
  row = np.full((max_length,), tokenizer.PAD_ID, np.int32)
  tokens = tokenizer.encode(text)[: max_length - int(cls)]
  if cls:
    row[0] = tokenizer.CLS_ID
  row[int(cls):int(cls) + len(tokens)] = tokens
  return row


def load_aan(directory: str, split: str, *, max_length: int, max_examples: int | None = None,
             cls: bool = True) -> dict[str, np.ndarray]:
  """{"inputs": int32 [N, 2 * max_length] (document 1 | document 2), "labels": int32 [N]}."""
  if split not in FILES:
    raise ConfigError(f"split must be one of {tuple(FILES)}, got {split!r}")
  if max_length < 1 + int(cls):
    raise ConfigError(f"data.aan.max_length={max_length}; must be >= {1 + int(cls)} "
                      f"({'CLS + ' if cls else ''}one byte)")
  path = os.path.join(directory, FILES[split])
  if not directory or not os.path.exists(path):
    where = f"no file '{path}'" if directory else f"'' names no folder (need {FILES[split]})"
    raise ConfigError(
        f"data.aan.dir: {where}; {lra_release.HOW_TO_GET} and set "
        "data.aan.dir to its lra_release/tsv_data folder")
  tokenizer = ByteTokenizer()
  rows, labels = [], []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      if max_examples and len(rows) == max_examples:
        break
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 5:
        raise ConfigError(f"data.aan.dir: {path} line {number} has {len(fields)} tab-separated "
                          "fields; expected 5 (label, id1, id2, text1, text2)")
      rows.append(np.concatenate([_row(tokenizer, fields[3], max_length, cls),
                                  _row(tokenizer, fields[4], max_length, cls)]))
      labels.append(int(float(fields[0])))
  if not rows:
    raise ConfigError(f"data.aan.dir: {path} holds no examples")
  return {"inputs": np.stack(rows), "labels": np.asarray(labels, np.int32)}
