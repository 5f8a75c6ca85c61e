"""A local text corpus for masked-language modelling, available offline on every machine.

By default the corpus is the Python standard library's own source (`sysconfig`'s "stdlib"
directory, without `site-packages`), which every Python install ships. Any directory of text
files works the same way via `data_dir` and `pattern`.

Determinism: files are read in sorted order of their relative (POSIX) path and reading stops at
`max_bytes`, so the same directory contents give the same token streams everywhere. Note that
the standard library differs a little between Python builds (patch version, distro patches), so
the default corpus is identical only across identical Python builds.

Split: a file goes to eval iff a stable hash (SHA-256) of its relative path falls under
`eval_fraction`. Splitting by file keeps near-duplicate text within a file from leaking across
splits, and a file's split never depends on which other files exist or on `max_bytes`.
"""

from __future__ import annotations

import hashlib
import pathlib
import sysconfig

import numpy as np

from encoders.errors import ConfigError
from experiments.data.tokenizers import ByteTokenizer

# Directory names skipped when reading the default (standard library) corpus: installed
# packages differ from machine to machine.
_DEFAULT_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages"})


def _in_eval(relative_path: str, eval_fraction: float) -> bool:
  """Stable assignment of a file to the eval split from the SHA-256 of its relative path."""
  digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction


def _list_files(root: pathlib.Path, pattern: str, excluded_dirs: frozenset[str]) -> list[str]:
  """Relative POSIX paths of the files under `root` matching `pattern`, sorted."""
  relative = []
  for path in root.glob(pattern):
    rel = path.relative_to(root)
    if path.is_file() and not excluded_dirs.intersection(rel.parts[:-1]):
      relative.append(rel.as_posix())
  return sorted(relative)


def read_documents(
    data_dir: str | None = None,
    *,
    pattern: str = "**/*.py",
    eval_fraction: float = 0.05,
    max_bytes: int = 8_000_000,
) -> dict[str, list[str]]:
  """Reads a directory of text files into train/eval lists of document strings.

  Files are taken in sorted relative-path order until `max_bytes` bytes of UTF-8 text have been
  collected; the file that crosses the budget is cut there (minus a character the cut would
  split), so at most `max_bytes` bytes are used and the cut is the same everywhere. Files that
  are not valid UTF-8 are skipped whole rather than decoded lossily (in the standard library
  these are test fixtures with deliberately broken encodings); empty files are skipped too.

  Args:
    data_dir: directory to read; None = the standard library source (without site-packages).
    pattern: `pathlib` glob relative to `data_dir`, e.g. "**/*.py" or "**/*.txt".
    eval_fraction: expected fraction of files assigned to eval, in (0, 1).
    max_bytes: text budget in bytes over both splits, read in sorted file order.

  Returns:
    {"train": [text, ...], "eval": [text, ...]}, each non-empty, in file order.
  """
  if not 0.0 < eval_fraction < 1.0:
    raise ConfigError(f"data.text.eval_fraction={eval_fraction}; must be in (0, 1)")
  if max_bytes <= 0:
    raise ConfigError(f"data.text.max_bytes={max_bytes}; must be positive")
  if data_dir is None:
    root, excluded = pathlib.Path(sysconfig.get_paths()["stdlib"]), _DEFAULT_EXCLUDED_DIRS
  else:
    root, excluded = pathlib.Path(data_dir), frozenset()
  if not root.is_dir():
    raise ConfigError(f"data.text.dir: directory '{root}' does not exist")
  files = _list_files(root, pattern, excluded)
  if not files:
    raise ConfigError(f"data.text.pattern: no files match '{pattern}' under '{root}'")

  docs: dict[str, list[str]] = {"train": [], "eval": []}
  budget = max_bytes
  for rel in files:
    raw = (root / rel).read_bytes()
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError:
      continue
    if not text:
      continue
    if len(raw) > budget:  # cut at the budget; drop a character split by the cut
      raw = raw[:budget]
      text = raw.decode("utf-8", errors="ignore")
    budget -= len(raw)
    docs["eval" if _in_eval(rel, eval_fraction) else "train"].append(text)
    if budget == 0:
      break
  for split, split_docs in docs.items():
    if not split_docs:
      raise ConfigError(
          f"data.text.eval_fraction: the {split} split is empty ({len(docs['train'])} train, "
          f"{len(docs['eval'])} eval files read from '{root}' with eval_fraction="
          f"{eval_fraction}, max_bytes={max_bytes}); raise data.text.max_bytes or adjust "
          f"data.text.eval_fraction")
  return docs


def corpus_key(docs: dict[str, list[str]]) -> str:
  """Short stable hash of the documents' text (keys caches derived from the corpus)."""
  digest = hashlib.sha256()
  for split in sorted(docs):
    for text in docs[split]:
      digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    digest.update(split.encode())
  return digest.hexdigest()[:16]


def load_text_corpus(
    data_dir: str | None = None,
    *,
    pattern: str = "**/*.py",
    eval_fraction: float = 0.05,
    max_bytes: int = 8_000_000,
    tokenizer=ByteTokenizer(),
) -> dict[str, np.ndarray]:
  """`read_documents`, tokenized and joined into flat train/eval token streams.

  Within a split, documents are joined with `tokenizer.SEP_ID` between them (none before the
  first or after the last). `tokenizer`: object with `encode(str) -> int array` and `SEP_ID`.

  Returns:
    {"train": int32 [n_train], "eval": int32 [n_eval]} flat token streams.
  """
  docs = read_documents(data_dir, pattern=pattern, eval_fraction=eval_fraction,
                        max_bytes=max_bytes)
  streams = {}
  for split, texts in docs.items():
    split_docs = [tokenizer.encode(text) for text in texts]
    sep = np.array([tokenizer.SEP_ID], np.int32)
    pieces = [sep] * (2 * len(split_docs) - 1)
    pieces[::2] = split_docs
    streams[split] = np.concatenate(pieces).astype(np.int32, copy=False)
  return streams


def chunk_stream(stream: np.ndarray, seq_len: int) -> np.ndarray:
  """Cuts a flat token stream into non-overlapping int32 [num_chunks, seq_len] windows.

  The remainder (fewer than `seq_len` trailing tokens) is dropped. The result is a
  random-access example set, e.g. for `pipeline.StepBatches`.
  """
  if seq_len <= 0:
    raise ConfigError(f"data.text.seq_len={seq_len}; must be positive")
  stream = np.asarray(stream)
  num_chunks = stream.shape[0] // seq_len
  if num_chunks == 0:
    raise ConfigError(f"data.text.seq_len={seq_len} exceeds the token stream length "
                     f"{stream.shape[0]}; no chunk fits")
  return stream[: num_chunks * seq_len].reshape(num_chunks, seq_len).astype(np.int32, copy=False)
