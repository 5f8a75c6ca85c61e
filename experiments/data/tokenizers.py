"""Tokenizers for the data modules.

The default is byte-level: every UTF-8 string encodes losslessly with a fixed 260-id vocabulary
and no vocabulary file, so any text works offline and on every machine. The alternative is a
WordPiece vocabulary (Schuster & Nakajima 2012; BERT, Devlin et al. 2019) trained on the local
corpus with Hugging Face `tokenizers` and cached in the data cache dir, keyed by corpus and
vocabulary size (`data.text.tokenizer = "wordpiece"`).

A tokenizer here is any object with `vocab_size`, the special ids `PAD_ID`, `CLS_ID`, `SEP_ID`,
`MASK_ID` (0..3 for both kinds), `num_special` (ids below it are never regular tokens),
`encode(text) -> int32 array` and `word_starts(tokens) -> bool array` (which tokens begin a
word, for whole-word and span masking); the data loaders rely on nothing else.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from encoders.errors import ConfigError

PAD_ID = 0
CLS_ID = 1
SEP_ID = 2
MASK_ID = 3
NUM_SPECIAL = 4  # byte b is token b + NUM_SPECIAL
KINDS = ("bytes", "wordpiece")
WORDPIECE_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")  # ids 0..4


def _byte_word_table() -> np.ndarray:
  """Bool [260]: token is part of a word (ASCII letter, digit, underscore, or non-ASCII byte,
  so multi-byte characters stay whole)."""
  table = np.zeros(NUM_SPECIAL + 256, bool)
  for b in range(256):
    table[NUM_SPECIAL + b] = b >= 128 or chr(b).isalnum() or chr(b) == "_"
  return table


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes offset by 4 special ids (PAD=0, CLS=1, SEP=2, MASK=3); vocab_size 260."""

  PAD_ID = PAD_ID
  CLS_ID = CLS_ID
  SEP_ID = SEP_ID
  MASK_ID = MASK_ID
  num_special = NUM_SPECIAL

  @property
  def vocab_size(self) -> int:
    """Number of token ids: 4 specials + 256 byte values."""
    return NUM_SPECIAL + 256

  def word_starts(self, tokens: jnp.ndarray) -> jnp.ndarray:
    """True where a token begins a word: a word is a run of word bytes (letters, digits,
    underscore, non-ASCII); every other byte is a word of its own. Works on [..., length]."""
    word = jnp.asarray(_byte_word_table())[tokens]
    previous = jnp.pad(word[..., :-1], [(0, 0)] * (word.ndim - 1) + [(1, 0)])
    return ~(word & previous)

  def encode(self, text: str) -> np.ndarray:
    """Returns the UTF-8 bytes of `text` as int32 ids (byte + 4); no specials are added."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + NUM_SPECIAL

  def decode(self, ids) -> str:
    """Inverse of `encode`: drops special ids, maps invalid UTF-8 to U+FFFD."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ConfigError(f"ByteTokenizer.decode: ids must be in [0, {self.vocab_size}), "
                       f"got range [{ids.min()}, {ids.max()}]")
    data = (ids[ids >= NUM_SPECIAL] - NUM_SPECIAL).astype(np.uint8).tobytes()
    return data.decode("utf-8", errors="replace")


class WordPieceTokenizer:
  """A trained WordPiece vocabulary (BERT pre-tokenization: whitespace and punctuation split,
  case kept); `##` pieces continue the previous word. Specials: PAD 0, CLS 1, SEP 2, MASK 3,
  UNK 4. Lossy: whitespace is not encoded."""

  PAD_ID = PAD_ID
  CLS_ID = CLS_ID
  SEP_ID = SEP_ID
  MASK_ID = MASK_ID
  num_special = len(WORDPIECE_SPECIALS)

  def __init__(self, tokenizer):
    self._tokenizer = tokenizer
    vocab = tokenizer.get_vocab()
    for want, token in enumerate(WORDPIECE_SPECIALS):
      if vocab.get(token) != want:
        raise ConfigError(f"data.text.tokenizer: {token} must have id {want}, has "
                          f"{vocab.get(token)} (a vocabulary from elsewhere?)")
    self._continues = np.zeros(tokenizer.get_vocab_size(), bool)
    for token, index in vocab.items():
      self._continues[index] = token.startswith("##")

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size()

  @property
  def hf_tokenizer(self):
    """The `tokenizers.Tokenizer` (what a checkpoint export writes as tokenizer.json)."""
    return self._tokenizer

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """`encode` over many texts (parallel in the Rust library)."""
    encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def word_starts(self, tokens: jnp.ndarray) -> jnp.ndarray:
    return ~jnp.asarray(self._continues)[tokens]


def train_wordpiece(texts: list[str], vocab_size: int, path: str) -> WordPieceTokenizer:
  """Trains WordPiece on `texts` and saves it as `path` (JSON); loads it if already there."""
  import tokenizers as hf  # pylint: disable=import-outside-toplevel

  if os.path.exists(path):
    return WordPieceTokenizer(hf.Tokenizer.from_file(path))
  tokenizer = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
  tokenizer.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = hf.decoders.WordPiece()
  trainer = hf.trainers.WordPieceTrainer(vocab_size=vocab_size,
                                         special_tokens=list(WORDPIECE_SPECIALS),
                                         show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  tokenizer.save(tmp)
  os.replace(tmp, path)
  return WordPieceTokenizer(tokenizer)


def make_tokenizer(kind: str, *, vocab_size: int, train_texts: list[str], cache_dir: str,
                   corpus_key: str):
  """`bytes` or a WordPiece vocabulary of `vocab_size` trained on `train_texts`, cached as
  `<cache_dir>/wordpiece-<corpus_key>-<vocab_size>.json`."""
  if kind == "bytes":
    return ByteTokenizer()
  if kind != "wordpiece":
    raise ConfigError(f"data.text.tokenizer={kind!r}; allowed: {', '.join(KINDS)}")
  if vocab_size <= len(WORDPIECE_SPECIALS):
    raise ConfigError(f"data.text.vocab_size={vocab_size}; must exceed "
                      f"{len(WORDPIECE_SPECIALS)} (the special tokens)")
  path = os.path.join(cache_dir, f"wordpiece-{corpus_key}-{vocab_size}.json")
  return train_wordpiece(train_texts, vocab_size, path)


def encode_all(tokenizer, texts: list[str]) -> list[np.ndarray]:
  """Token arrays of `texts` (batched where the tokenizer can)."""
  if hasattr(tokenizer, "encode_batch"):
    return tokenizer.encode_batch(texts)
  return [tokenizer.encode(text) for text in texts]
