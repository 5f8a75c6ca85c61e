"""Tokenizers for the data modules.

The default is byte-level: every UTF-8 string encodes losslessly with a fixed 260-id vocabulary
and no vocabulary file, so any text works offline and on every machine.

A tokenizer here is any object with `vocab_size`, the special ids `PAD_ID`, `CLS_ID`, `SEP_ID`,
`MASK_ID`, and `encode(text) -> int32 array`; the data loaders rely on nothing else.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from encoders.errors import ConfigError

PAD_ID = 0
CLS_ID = 1
SEP_ID = 2
MASK_ID = 3
NUM_SPECIAL = 4  # byte b is token b + NUM_SPECIAL


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes offset by 4 special ids (PAD=0, CLS=1, SEP=2, MASK=3); vocab_size 260."""

  PAD_ID = PAD_ID
  CLS_ID = CLS_ID
  SEP_ID = SEP_ID
  MASK_ID = MASK_ID

  @property
  def vocab_size(self) -> int:
    """Number of token ids: 4 specials + 256 byte values."""
    return NUM_SPECIAL + 256

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
