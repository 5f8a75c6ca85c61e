"""Tests for experiments/data/listops.py (LRA ListOps generator).

Labels are checked against an independent stack evaluator over token strings
that shares no code with the generator.
"""

import hashlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from encoders.errors import ConfigError
from experiments.data import listops

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHORT = dict(min_length=16, max_length=128, max_depth=4, max_args=10)
OPS = ("[MIN", "[MAX", "[MED", "[SM")


# ----------------------------------------------------------------------------
# Independent reference: parse and evaluate token strings with a stack.
# ----------------------------------------------------------------------------
def reference_eval(tokens, max_args=10):
  """Returns (value, max operator nesting); asserts the sequence is well formed."""
  stack = []  # frames: [operator, args]
  result = None
  max_nesting = 0
  for i, tok in enumerate(tokens):
    assert result is None, f"tokens after the root closed at position {i}"
    if tok in OPS:
      stack.append([tok, []])
      max_nesting = max(max_nesting, len(stack))
      continue
    if tok == "]":
      assert stack, f"unbalanced ']' at position {i}"
      op, args = stack.pop()
      assert 2 <= len(args) <= max_args, f"{op} has {len(args)} args"
      if op == "[MIN":
        value = min(args)
      elif op == "[MAX":
        value = max(args)
      elif op == "[MED":
        value = int(np.median(args))
      else:
        value = sum(args) % 10
    else:
      assert tok in "0123456789" and len(tok) == 1, f"bad token {tok!r}"
      value = int(tok)
    if stack:
      stack[-1][1].append(value)
    else:
      result = value
  assert not stack, "unclosed operator"
  assert result is not None, "empty sequence"
  return result, max_nesting


def test_reference_eval_on_handwritten_examples():
  assert reference_eval("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]".split())[0] == 5
  assert reference_eval("[SM 9 8 [MED 1 2 ] ]".split())[0] == (9 + 8 + 1) % 10
  assert reference_eval("[MED 1 2 3 4 ]".split())[0] == 2  # int(2.5)
  assert reference_eval(["7"]) == (7, 0)


# ----------------------------------------------------------------------------
# Vocabulary and encoding.
# ----------------------------------------------------------------------------
def test_vocab_constants():
  assert listops.VOCAB == ("<pad>", "<cls>", *[str(d) for d in range(10)],
                           "[MIN", "[MAX", "[MED", "[SM", "]")
  assert listops.VOCAB[listops.PAD_ID] == "<pad>"
  assert listops.VOCAB[listops.CLS_ID] == "<cls>"
  assert listops.VOCAB_SIZE == 17
  assert listops.NUM_CLASSES == 10


def test_encode_decode_roundtrip():
  toks = "[MAX 4 3 [MIN 2 3 ] 1 ]".split()
  ids = listops.encode(toks)
  assert ids.dtype == np.int32
  assert listops.decode(ids) == toks
  np.testing.assert_array_equal(listops.encode(" ".join(toks)), ids)
  with pytest.raises(ValueError, match="tokens"):
    listops.encode(["[FIRST", "1", "]"])
  with pytest.raises(ValueError, match="ids"):
    listops.decode([listops.VOCAB_SIZE])


# ----------------------------------------------------------------------------
# Generation: labels, lengths, structure.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, n", [
    (SHORT, 300),
    (dict(min_length=16, max_length=128, max_depth=10, max_args=10), 200),
    (dict(min_length=8, max_length=40, max_depth=3, max_args=3), 200),
    (dict(), 20),  # LRA lengths 500-2000
])
def test_labels_bounds_and_structure(kwargs, n):
  seqs, labels = listops.generate(n, seed=3, **kwargs)
  lo = kwargs.get("min_length", 500)
  hi = kwargs.get("max_length", 2000)
  max_depth = kwargs.get("max_depth", 10)
  max_args = kwargs.get("max_args", 10)
  assert len(seqs) == n and labels.shape == (n,) and labels.dtype == np.int32
  for seq, label in zip(seqs, labels):
    assert seq.dtype == np.int32 and seq.ndim == 1
    assert lo <= len(seq) <= hi
    value, nesting = reference_eval(listops.decode(seq), max_args=max_args)
    assert value == label
    assert nesting <= max_depth - 1  # root at depth 1; depth max_depth is a leaf
  assert len({s.tobytes() for s in seqs}) == n  # unique


def test_length_bounds_are_inclusive():
  seqs, _ = listops.generate(30, seed=0, min_length=7, max_length=7, max_depth=4)
  assert all(len(s) == 7 for s in seqs)


def test_labels_not_degenerate():
  _, labels = listops.generate(1000, seed=0, **SHORT)
  dist = listops.label_distribution(labels)
  assert dist.shape == (10,) and np.isclose(dist.sum(), 1.0)
  assert (dist > 0.03).sum() == 10
  assert dist.max() < 0.3


def test_label_distribution_validates():
  np.testing.assert_allclose(listops.label_distribution([0, 0, 9, 1]),
                             [0.5, 0.25] + [0] * 7 + [0.25])
  with pytest.raises(ValueError, match="labels"):
    listops.label_distribution([10])
  with pytest.raises(ValueError, match="labels"):
    listops.label_distribution([])


def _digest(seqs, labels):
  h = hashlib.sha256()
  for s in seqs:
    h.update(np.int64(len(s)).tobytes())
    h.update(s.astype("<i4").tobytes())
  h.update(labels.astype("<i4").tobytes())
  return h.hexdigest()


def test_deterministic_in_process():
  a = listops.generate(100, seed=5, **SHORT)
  b = listops.generate(100, seed=5, **SHORT)
  c = listops.generate(100, seed=6, **SHORT)
  assert _digest(*a) == _digest(*b)
  assert _digest(*a) != _digest(*c)


def test_uniform_block_size_does_not_change_output(monkeypatch):
  # Exercises every buffer-refill path: the stream of uniforms is the same.
  expected = _digest(*listops.generate(50, seed=2, **SHORT))
  for block in (1, 2, 7):
    monkeypatch.setattr(listops, "_UNIFORM_BLOCK", block)
    assert _digest(*listops.generate(50, seed=2, **SHORT)) == expected


def _digest_in_subprocess(seed, hashseed):
  code = (
      "import hashlib, numpy as np\n"
      "from experiments.data import listops\n"
      f"seqs, labels = listops.generate(200, seed={seed}, **{SHORT!r})\n"
      "h = hashlib.sha256()\n"
      "for s in seqs:\n"
      "  h.update(np.int64(len(s)).tobytes()); h.update(s.astype('<i4').tobytes())\n"
      "h.update(labels.astype('<i4').tobytes())\n"
      "print(h.hexdigest())\n")
  env = dict(os.environ, PYTHONHASHSEED=str(hashseed),
             PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                       capture_output=True, text=True, check=True, timeout=120)
  return out.stdout.strip()


def test_deterministic_across_processes_and_hash_seeds():
  a = _digest_in_subprocess(seed=0, hashseed=0)
  b = _digest_in_subprocess(seed=0, hashseed=12345)
  c = _digest_in_subprocess(seed=1, hashseed=0)
  assert len(a) == 64
  assert a == b
  assert a != c
  assert a == _digest(*listops.generate(200, seed=0, **SHORT))


# ----------------------------------------------------------------------------
# Argument validation.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    (dict(num_examples=0), "num_examples"),
    (dict(num_examples=-3), "num_examples"),
    (dict(min_length=50, max_length=40), "min_length > max_length"),
    (dict(min_length=0), "min_length"),
    (dict(max_args=1), "max_args"),
    (dict(max_depth=0), "max_depth"),
    (dict(seed=-1), "seed"),
    (dict(min_length=6, max_length=100, max_depth=2, max_args=3), "min_length=6 is unreachable"),
])
def test_generate_rejects_bad_args(kwargs, name):
  full = dict(num_examples=10, seed=0, **SHORT)
  full.update(kwargs)
  n = full.pop("num_examples")
  with pytest.raises(ValueError, match=name) as err:
    listops.generate(n, **full)
  assert "\n" not in str(err.value)


def test_generate_rejects_non_int():
  with pytest.raises(TypeError, match="max_length"):
    listops.generate(10, seed=0, min_length=16, max_length=128.0)


def test_too_few_distinct_sequences_raises(monkeypatch):
  monkeypatch.setattr(listops, "MAX_TRIES_WITHOUT_NEW", 20_000)
  # Length exactly 1 admits only the 10 single digits: raise instead of looping.
  with pytest.raises(ConfigError, match="no new example"):
    listops.generate(11, seed=0, min_length=1, max_length=1)
  assert len(listops.generate(10, seed=0, min_length=1, max_length=1)[0]) == 10


# ----------------------------------------------------------------------------
# load_listops: splits, padding, cache.
# ----------------------------------------------------------------------------
LOAD = dict(num_train=120, num_eval=40, seed=0, min_length=16, max_length=64, max_depth=4)


def test_load_listops_shapes_padding_and_splits(tmp_path):
  splits = {s: listops.load_listops(s, cache_dir=tmp_path, **LOAD)
            for s in ("train", "validation", "test")}
  expected_n = {"train": 120, "validation": 40, "test": 40}
  seqs, labels = listops.generate(200, seed=0, min_length=16, max_length=64, max_depth=4)
  offset = 0
  for name, data in splits.items():
    inputs, lab = data["inputs"], data["labels"]
    n = expected_n[name]
    assert inputs.shape == (n, 65) and inputs.dtype == np.int32
    assert lab.shape == (n,) and lab.dtype == np.int32
    assert (inputs[:, 0] == listops.CLS_ID).all()
    assert (inputs[:, 1:] != listops.CLS_ID).all()
    for row, label, seq in zip(inputs, lab, seqs[offset:offset + n]):
      body = row[1:]
      length = int((body != listops.PAD_ID).sum())
      assert (body[length:] == listops.PAD_ID).all()  # padding only at the end
      np.testing.assert_array_equal(body[:length], seq)  # splits in generation order
      assert reference_eval(listops.decode(body[:length]))[0] == label
    np.testing.assert_array_equal(lab, labels[offset:offset + n])
    offset += n
  # Disjoint splits.
  rows = {name: {r.tobytes() for r in d["inputs"]} for name, d in splits.items()}
  assert not rows["train"] & rows["validation"]
  assert not rows["train"] & rows["test"]
  assert not rows["validation"] & rows["test"]


def test_load_listops_caches(tmp_path, monkeypatch):
  first = listops.load_listops("train", cache_dir=tmp_path, **LOAD)
  files = sorted(p.name for p in tmp_path.iterdir())
  assert len(files) == 1 and files[0].startswith("listops_") and files[0].endswith(".npz")

  def boom(*args, **kwargs):
    raise AssertionError("generate() called although the cache exists")

  monkeypatch.setattr(listops, "generate", boom)
  for split in ("train", "validation", "test"):
    again = listops.load_listops(split, cache_dir=tmp_path, **LOAD)
    if split == "train":
      np.testing.assert_array_equal(again["inputs"], first["inputs"])
      np.testing.assert_array_equal(again["labels"], first["labels"])
  assert sorted(p.name for p in tmp_path.iterdir()) == files  # no temp files left
  # Different generation args -> a different file (so generate is needed again).
  with pytest.raises(AssertionError, match="cache exists"):
    listops.load_listops("train", cache_dir=tmp_path, **dict(LOAD, seed=1))


def test_load_listops_cache_key_covers_every_arg(tmp_path):
  base = dict(LOAD, num_train=20, num_eval=5, max_args=10)
  variants = [dict(base, **{k: v}) for k, v in [
      ("num_train", 21), ("num_eval", 6), ("seed", 2), ("min_length", 15),
      ("max_length", 63), ("max_depth", 5), ("max_args", 9)]]
  for kw in [base] + variants:
    listops.load_listops("test", cache_dir=tmp_path, **kw)
  assert len(list(tmp_path.glob("listops_*.npz"))) == 1 + len(variants)


def test_load_listops_bad_args(tmp_path):
  with pytest.raises(ValueError, match="split must be one of .*train.*validation.*test"):
    listops.load_listops("valid", cache_dir=tmp_path, **LOAD)
  with pytest.raises(ValueError, match="num_eval"):
    listops.load_listops("train", cache_dir=tmp_path, **dict(LOAD, num_eval=0))
  with pytest.raises(ValueError, match="min_length > max_length"):
    listops.load_listops("train", cache_dir=tmp_path, **dict(LOAD, min_length=100))
  assert not list(tmp_path.iterdir())
