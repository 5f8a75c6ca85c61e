"""Seeded, deterministic generator for the Long Range Arena ListOps task.

References:
  * Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers",
    ICLR 2021 (the 500-2000 token ListOps setting; generator
    ``lra_benchmarks/data/listops.py``).
  * Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree
    Learning", NAACL Student Research Workshop (the original task).

Task. A sequence is a prefix expression over digits ``0``-``9`` with the
operators ``[MIN``, ``[MAX``, ``[MED`` (median, truncated to an int like
``int(np.median(args))``) and ``[SM`` (sum mod 10); every operator is closed by
``]``. The label is the value of the expression, one of ``NUM_CLASSES = 10``.
Example: ``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` -> 5.

Tree generation follows LRA's ``generate_tree`` (the root is at depth 1):
  * if ``depth < max_depth`` draw ``r ~ U[0, 1)``, else ``r = 1``;
  * if ``r > VALUE_P`` (0.25) the node is a leaf digit, uniform over 0-9;
  * otherwise it is an operator, uniform over the four, with
    ``randint(2, max_args)`` children (both ends inclusive), each generated the
    same way at ``depth + 1``.
So operators nest at most ``max_depth - 1`` deep.
The length of a tree is its number of tokens: digits + operators + closing
brackets (LRA's printed parentheses are not tokens). A tree is kept only if
``min_length <= length <= max_length`` -- both bounds INCLUSIVE (LRA's script
used strict inequalities; with the LRA defaults the difference is two lengths
out of 1500). Defaults are LRA's: ``max_depth=10, max_args=10,
min_length=500, max_length=2000``.

Differences from LRA's script that keep the distribution but fix
reproducibility and speed:
  * All randomness comes from one ``np.random.Generator``
    (``np.random.default_rng(seed)``), drawn in blocks of uniforms; integers are
    ``floor(u * n)``. Never Python's ``random``, ``hash()`` or set order. The
    operator is drawn before its children (LRA drew it after; both are uniform
    and independent of the children, so the distribution is the same).
  * Generation is iterative (no recursion limit) and a tree is abandoned as soon
    as its length is certain to exceed ``max_length`` (each pending child counts
    at least one token); abandoned trees would have been rejected anyway, and
    draws are i.i.d., so accepted trees have exactly LRA's distribution.
  * Duplicates are removed with an insertion-ordered dict keyed by the token
    sequence (as bytes) (LRA used an unordered ``set`` of trees, so its split assignment
    changed from run to run). All splits come from one stream and are assigned
    in order: the first ``num_train`` unique examples are train, the next
    ``num_eval`` validation, the next ``num_eval`` test, so no example is in two
    splits. (Hence validation/test depend on ``num_train``; both are part of the
    cache key.)
Against LRA's own script (30k examples each at LRA lengths; 20k at 16-128
tokens) the label distribution, mean/median length and operator share agree
within sampling noise, and LRA's ``to_value`` gives our labels on our sequences.

Vocabulary. ``VOCAB`` is a fixed module constant, never rebuilt from data:
``<pad>`` = 0, ``<cls>`` = 1, digits ``"0"``-``"9"`` = 2-11, then ``[MIN``,
``[MAX``, ``[MED``, ``[SM``, ``]``.

Public API:
  * ``generate(num_examples, *, seed, ...)`` -> (list of int32 token-id arrays
    without CLS/padding, int32 labels); deterministic given its arguments.
  * ``encode(tokens)`` / ``decode(ids)`` between token strings and ids.
  * ``load_listops(split, *, num_train, num_eval, seed, min_length, max_length,
    max_depth=10, max_args=10, cache_dir)`` -> ``{"inputs": int32 [N,
    max_length + 1] (CLS, tokens, PAD...), "labels": int32 [N]}``. All three
    splits are generated once and cached in ``cache_dir`` as one ``.npz`` named
    by a sha256 of the canonical JSON of every generation argument (plus a
    format version), written atomically (temp file in the same directory, then
    ``os.replace``); later calls read it. The file stores each split ragged
    (uint8 tokens, int32 lengths, int32 labels; ~100 MB for LRA's 100k
    examples instead of 800 MB padded) plus the args JSON, checked on read.
  * ``label_distribution(labels)`` -> fraction of each class (its max is the
    majority-class baseline).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from encoders.errors import ConfigError
from experiments.data import lra_release, npz_cache

# ----------------------------------------------------------------------------
# Vocabulary (fixed; never derived from data).
# ----------------------------------------------------------------------------
MIN = "[MIN"
MAX = "[MAX"
MED = "[MED"
SUM_MOD = "[SM"
END = "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
DIGITS = tuple(str(d) for d in range(10))

VOCAB = ("<pad>", "<cls>") + DIGITS + OPERATORS + (END,)
PAD_ID = 0
CLS_ID = 1
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10

_TOKEN_TO_ID = {tok: i for i, tok in enumerate(VOCAB)}
_DIGIT0_ID = _TOKEN_TO_ID["0"]  # digit d has id _DIGIT0_ID + d
_OP0_ID = _TOKEN_TO_ID[MIN]  # operator j (index in OPERATORS) has id _OP0_ID + j
_END_ID = _TOKEN_TO_ID[END]
_OP_MIN, _OP_MAX, _OP_MED, _OP_SM = range(4)

VALUE_P = 0.25  # probability threshold of LRA's generate_tree: r <= VALUE_P -> operator
SPLITS = ("train", "validation", "test")
_FORMAT_VERSION = 2  # bump when the generator's output for given args changes
_UNIFORM_BLOCK = 1 << 16  # uniforms drawn from the Generator per block
# generate() gives up after this many trees in a row without a new unique example
# (measured: ~12 trees per example at LRA lengths, ~6-30 at 16-128 tokens, ~200 for
# narrow windows such as 1000-1100), so it fires only for hopeless settings.
MAX_TRIES_WITHOUT_NEW = 1_000_000


# ----------------------------------------------------------------------------
# Validation helpers (one-line errors naming the argument).
# ----------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
  if value < minimum:
    raise ConfigError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def _max_tree_length(max_depth: int, max_args: int) -> int:
  """Longest token sequence the tree process can produce (root at depth 1)."""
  length = 1  # a node at depth max_depth is always a leaf
  for _ in range(max_depth - 1):
    length = max(1, 2 + max_args * length)
  return length


def _check_generation_args(*, seed, min_length, max_length, max_depth, max_args):
  seed = _check_int("seed", seed, 0)
  min_length = _check_int("min_length", min_length, 1)
  max_length = _check_int("max_length", max_length, 1)
  max_depth = _check_int("max_depth", max_depth, 1)
  max_args = _check_int("max_args", max_args, 2)
  if min_length > max_length:
    raise ConfigError(f"min_length > max_length: {min_length} > {max_length}")
  longest = _max_tree_length(max_depth, max_args)
  if min_length > longest:
    raise ConfigError(
        f"min_length={min_length} is unreachable: trees with max_depth={max_depth}, "
        f"max_args={max_args} have at most {longest} tokens")
  return seed, min_length, max_length, max_depth, max_args


# ----------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------
class _Uniforms:
  """Block-buffered U[0, 1) draws from one np.random.Generator (deterministic)."""

  def __init__(self, rng: np.random.Generator):
    self._rng = rng
    self.buf: list[float] = []
    self.pos = 0

  def unread(self, pos: int, k: int) -> list[float]:
    """Drops the first `pos` values and draws blocks until >= k remain; returns buf."""
    buf = self.buf[pos:]
    while len(buf) < k:
      buf += self._rng.random(_UNIFORM_BLOCK).tolist()
    self.buf, self.pos = buf, 0
    return buf


def _median_int(values: list[int]) -> int:
  """int(np.median(values)) for non-negative ints, without numpy overhead."""
  s = sorted(values)
  n = len(s)
  mid = n // 2
  if n % 2:
    return s[mid]
  return (s[mid - 1] + s[mid]) // 2  # == int() truncation of the float mean (values >= 0)


def _sample_tree(u: _Uniforms, max_depth: int, max_args: int, max_length: int):
  """Samples one tree; returns (token ids, label), or None once it exceeds max_length.

  Iterative version of LRA's recursive ``generate_tree(1, max_depth, max_args)``.
  The stack holds, per open operator, [operator, remaining children, child values].
  ``need`` is a lower bound on the final length: emitted tokens + one per
  pending closing bracket + one per child not yet generated.
  """
  buf, pos = u.buf, u.pos
  n_buf = len(buf)
  tokens: list[int] = []
  stack: list[list] = []
  depth = 1
  need = 1
  num_choices = max_args - 1  # randint(2, max_args) inclusive
  while True:
    # One node at `depth`.
    if depth < max_depth:
      if pos == n_buf:
        buf = u.unread(pos, 1); pos, n_buf = 0, len(buf)
      r = buf[pos]; pos += 1
    else:
      r = 1.0
    if r > VALUE_P:  # leaf digit
      if pos == n_buf:
        buf = u.unread(pos, 1); pos, n_buf = 0, len(buf)
      value = int(buf[pos] * 10); pos += 1
      tokens.append(_DIGIT0_ID + value)
      # Close every operator that just received its last child.
      while stack:
        frame = stack[-1]
        frame[2].append(value)
        frame[1] -= 1
        if frame[1]:
          break
        stack.pop()
        tokens.append(_END_ID)
        op, args = frame[0], frame[2]
        if op == _OP_MIN:
          value = min(args)
        elif op == _OP_MAX:
          value = max(args)
        elif op == _OP_MED:
          value = _median_int(args)
        else:
          value = sum(args) % 10
        depth -= 1
      else:
        u.pos = pos
        return tokens, value
    else:  # operator node
      if pos + 1 >= n_buf:
        buf = u.unread(pos, 2); pos, n_buf = 0, len(buf)
      num_args = 2 + int(buf[pos] * num_choices)
      op = int(buf[pos + 1] * 4)
      pos += 2
      need += num_args + 1
      if need > max_length:
        u.pos = pos
        return None
      tokens.append(_OP0_ID + op)
      stack.append([op, num_args, []])
      depth += 1


def generate(num_examples: int, *, seed: int, min_length=500, max_length=2000,
             max_depth=10, max_args=10) -> tuple[list[np.ndarray], np.ndarray]:
  """Generates ``num_examples`` unique ListOps examples, deterministically.

  Args:
    num_examples: number of unique examples to return (> 0).
    seed: non-negative int seeding ``np.random.default_rng``.
    min_length: inclusive lower bound on the number of tokens.
    max_length: inclusive upper bound on the number of tokens.
    max_depth: LRA's max_depth (root at depth 1; nodes at max_depth are leaves).
    max_args: maximum number of arguments per operator (>= 2).

  Returns:
    (sequences, labels): a list of int32 token-id arrays (no CLS, no padding),
    in generation order, and an int32 array of labels in [0, 10).

  Raises:
    ValueError: on invalid arguments (one line naming the argument).
    RuntimeError: if MAX_TRIES_WITHOUT_NEW trees in a row yield no new example
      (the length window is too rare, or admits fewer distinct sequences than
      requested), instead of looping forever.
  """
  num_examples = _check_int("num_examples", num_examples, 1)
  seed, min_length, max_length, max_depth, max_args = _check_generation_args(
      seed=seed, min_length=min_length, max_length=max_length,
      max_depth=max_depth, max_args=max_args)
  u = _Uniforms(np.random.default_rng(seed))
  # Insertion-ordered dedupe keyed by the token sequence (as bytes: ids < 256,
  # ~8x smaller than a tuple of ints at LRA lengths).
  examples: dict[bytes, int] = {}
  tries_without_new = 0
  while len(examples) < num_examples:
    if tries_without_new >= MAX_TRIES_WITHOUT_NEW:
      raise ConfigError(
          f"generate: no new example in {tries_without_new} trees (have {len(examples)} of "
          f"{num_examples}); lengths [{min_length}, {max_length}] are too rare or admit "
          "too few distinct sequences for these settings")
    tries_without_new += 1
    tree = _sample_tree(u, max_depth, max_args, max_length)
    if tree is None:
      continue
    tokens, label = tree
    if len(tokens) < min_length:
      continue
    key = bytes(tokens)
    if key in examples:
      continue
    tries_without_new = 0
    examples[key] = label
  sequences = [np.frombuffer(k, dtype=np.uint8).astype(np.int32) for k in examples]
  labels = np.fromiter(examples.values(), dtype=np.int32, count=len(examples))
  return sequences, labels


# ----------------------------------------------------------------------------
# Encoding.
# ----------------------------------------------------------------------------
def encode(tokens: Sequence[str]) -> np.ndarray:
  """Token strings -> int32 ids. A plain string is split on whitespace."""
  if isinstance(tokens, str):
    tokens = tokens.split()
  try:
    return np.asarray([_TOKEN_TO_ID[t] for t in tokens], dtype=np.int32)
  except KeyError as e:
    raise ConfigError(f"tokens: unknown token {e.args[0]!r}; vocabulary is {VOCAB}") from None


def decode(ids) -> list[str]:
  """Token ids -> token strings (every id, including <cls> and <pad>)."""
  ids = np.asarray(ids).reshape(-1)
  if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
    raise ConfigError(f"ids: values must be in [0, {VOCAB_SIZE}), got "
                     f"[{ids.min()}, {ids.max()}]")
  return [VOCAB[i] for i in ids.tolist()]


def label_distribution(labels) -> np.ndarray:
  """Fraction of examples per class, float64 [NUM_CLASSES]; max = majority baseline."""
  labels = np.asarray(labels).reshape(-1)
  if labels.size == 0:
    raise ConfigError("labels: must be non-empty")
  if labels.min() < 0 or labels.max() >= NUM_CLASSES:
    raise ConfigError(f"labels: values must be in [0, {NUM_CLASSES}), got "
                     f"[{labels.min()}, {labels.max()}]")
  return np.bincount(labels, minlength=NUM_CLASSES) / labels.size


# ----------------------------------------------------------------------------
# Cached splits.
# ----------------------------------------------------------------------------
def _pad(tokens: np.ndarray, lengths: np.ndarray, max_length: int) -> np.ndarray:
  """Flat concatenated tokens + per-row lengths -> int32 [N, max_length + 1]."""
  inputs = np.full((len(lengths), max_length + 1), PAD_ID, dtype=np.int32)
  inputs[:, 0] = CLS_ID
  body = inputs[:, 1:]
  body[np.arange(max_length)[None, :] < lengths[:, None]] = tokens  # row-major fill
  return inputs


def load_listops(split: str, *, num_train: int, num_eval: int, seed: int,
                 min_length: int, max_length: int, max_depth: int = 10,
                 max_args: int = 10,
                 cache_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns one split of a cached ListOps dataset.

  Args:
    split: "train" (num_train examples), "validation" or "test" (num_eval each).
    num_train, num_eval: split sizes (> 0).
    seed, min_length, max_length, max_depth, max_args: as in `generate`.
    cache_dir: directory holding the cached .npz (created if missing).

  Returns:
    {"inputs": int32 [N, max_length + 1] = CLS, tokens, then PAD_ID padding;
     "labels": int32 [N]}.
  """
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  num_train = _check_int("num_train", num_train, 1)
  num_eval = _check_int("num_eval", num_eval, 1)
  seed, min_length, max_length, max_depth, max_args = _check_generation_args(
      seed=seed, min_length=min_length, max_length=max_length,
      max_depth=max_depth, max_args=max_args)
  args = dict(format_version=_FORMAT_VERSION, num_train=num_train, num_eval=num_eval,
              seed=seed, min_length=min_length, max_length=max_length,
              max_depth=max_depth, max_args=max_args)
  path, args_json = npz_cache.path_for(cache_dir, "listops", args)
  cached = npz_cache.read(path, args_json, "ListOps")
  if cached is None:
    logging.info("ListOps: generating %d examples (%s) into %s",
                 num_train + 2 * num_eval, args_json, path)
    sequences, labels = generate(
        num_train + 2 * num_eval, seed=seed, min_length=min_length,
        max_length=max_length, max_depth=max_depth, max_args=max_args)
    bounds = {"train": (0, num_train),
              "validation": (num_train, num_train + num_eval),
              "test": (num_train + num_eval, num_train + 2 * num_eval)}
    cached = {}
    for name, (lo, hi) in bounds.items():  # ragged uint8 storage; padded on read
      cached[f"{name}_tokens"] = np.concatenate(sequences[lo:hi]).astype(np.uint8)
      cached[f"{name}_lengths"] = np.asarray([len(x) for x in sequences[lo:hi]], np.int32)
      cached[f"{name}_labels"] = labels[lo:hi]
    npz_cache.write(path, args_json, cached, "ListOps")
  inputs = _pad(cached[f"{split}_tokens"], cached[f"{split}_lengths"], max_length)
  return {"inputs": inputs, "labels": cached[f"{split}_labels"]}


# ----------------------------------------------------------------------------
# LRA's released files.
# ----------------------------------------------------------------------------
LRA_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}


def read_lra_tsv(path: str, max_length: int) -> dict[str, np.ndarray]:
  """One of LRA's ListOps TSV files (header `Source<TAB>Target`; Source is the expression
  with LRA's printed parentheses, which are not tokens and are dropped, as in `generate`):
  {"inputs": int32 [N, max_length + 1] = CLS, tokens (truncated), PAD...; "labels": [N]}."""
  sequences, labels = [], []
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    if header[:2] != ["Source", "Target"]:
      raise ConfigError(f"data.listops.lra_dir: {path} does not start with the header "
                        f"'Source<TAB>Target' of LRA's ListOps files (got {header[:2]})")
    for line in f:
      if not line.strip():
        continue
      source, target = line.rstrip("\n").split("\t")[:2]
      sequences.append(encode([t for t in source.split() if t not in ("(", ")")])[:max_length])
      labels.append(int(target))
  if not sequences:
    raise ConfigError(f"data.listops.lra_dir: {path} holds no examples")
  lengths = np.asarray([len(s) for s in sequences], np.int32)
  return {"inputs": _pad(np.concatenate(sequences), lengths, max_length),
          "labels": np.asarray(labels, np.int32)}


def load_lra_listops(directory: str, split: str, *, max_length: int) -> dict[str, np.ndarray]:
  """A split of LRA's released ListOps (`lra_release/listops-1000/basic_*.tsv`)."""
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  path = os.path.join(directory, LRA_FILES[split])
  if not os.path.exists(path):
    raise ConfigError(
        f"data.listops.lra_dir: no file '{path}'; {lra_release.HOW_TO_GET} and point "
        "lra_dir to lra_release/listops-1000, or set lra_dir='' to "
        "generate ListOps")
  return read_lra_tsv(path, max_length)
