"""The on-disk cache of generated data sets (ListOps, Pathfinder): one `.npz` per argument set.

A file is named by a sha256 of the canonical JSON of every generation argument (plus the
generator's format version), stores that JSON and a checksum of every array, and is written
atomically (temp file in the same directory, then `os.replace`), so a crash never leaves a
file that looks finished. On read, a missing, half-written or corrupted file is regenerated;
a file whose stored arguments differ from the requested ones (a hash collision, or a file
copied in by hand) is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
from absl import logging

from encoders.errors import ConfigError


def path_for(cache_dir: str | os.PathLike | None, prefix: str, args: dict) -> tuple[str, str]:
  """(the cache file for `args`, their canonical JSON); creates `cache_dir`."""
  if cache_dir is None:
    raise ConfigError("cache_dir must be a directory path, got None")
  args_json = json.dumps(args, sort_keys=True, separators=(",", ":"))
  digest = hashlib.sha256(args_json.encode()).hexdigest()[:16]
  os.makedirs(cache_dir, exist_ok=True)
  return os.path.join(os.fspath(cache_dir), f"{prefix}_{digest}.npz"), args_json


def checksum(arrays: dict[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  for name in sorted(arrays):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(arrays[name]).tobytes())
  return digest.hexdigest()


def write(path: str, args_json: str, arrays: dict[str, np.ndarray], what: str) -> None:
  """Atomic write (temp file + rename) with a checksum of every array."""
  fd, tmp = tempfile.mkstemp(prefix=".cache_", suffix=".npz.tmp", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, args_json=np.asarray(args_json), checksum=np.asarray(checksum(arrays)),
               **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  logging.info("%s: wrote %s", what, path)


def read(path: str, args_json: str, what: str) -> dict[str, np.ndarray] | None:
  """The cached arrays, or None (missing, half-written or corrupted: regenerate)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      stored_args, stored_sum = str(data["args_json"]), str(data["checksum"])
      arrays = {k: data[k] for k in data.files if k not in ("args_json", "checksum")}
  except Exception as error:  # pylint: disable=broad-except  (any unreadable file)
    logging.warning("%s: cache %s is unreadable (%s); regenerating", what, path, error)
    return None
  if stored_args != args_json:
    raise ConfigError(
        f"cache_dir: {path} holds args {stored_args}, expected {args_json}; delete it")
  if checksum(arrays) != stored_sum:
    logging.warning("%s: cache %s fails its checksum; regenerating", what, path)
    return None
  logging.info("%s: read cache %s", what, path)
  return arrays
