"""Tests for experiments/data/tokenizers.py and experiments/data/text_corpus.py."""

import dataclasses
import hashlib

import numpy as np
import pytest

from experiments.data import tokenizers
from experiments.data.text_corpus import chunk_stream, load_text_corpus
from experiments.data.tokenizers import ByteTokenizer

TOK = ByteTokenizer()


# ----------------------------------------------------------------------------
# ByteTokenizer
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "hello world", "héllo wörld ✓ 日本語 🙂\n\ttab"])
def test_byte_tokenizer_round_trip(text):
  ids = TOK.encode(text)
  assert ids.dtype == np.int32
  assert len(ids) == len(text.encode("utf-8"))
  assert ids.size == 0 or (ids.min() >= 4 and ids.max() < TOK.vocab_size)
  assert TOK.decode(ids) == text


def test_byte_tokenizer_specials_and_vocab():
  assert TOK.vocab_size == 260
  assert (tokenizers.PAD_ID, tokenizers.CLS_ID, tokenizers.SEP_ID, tokenizers.MASK_ID) == (
      0, 1, 2, 3)
  assert (TOK.PAD_ID, TOK.CLS_ID, TOK.SEP_ID, TOK.MASK_ID) == (0, 1, 2, 3)
  ids = np.concatenate([[TOK.CLS_ID], TOK.encode("a"), [TOK.MASK_ID, TOK.SEP_ID],
                        TOK.encode("é"), [TOK.PAD_ID] * 3])
  assert TOK.decode(ids) == "aé"
  assert TOK.encode("A").tolist() == [ord("A") + 4]


def test_byte_tokenizer_decode_invalid():
  assert TOK.decode(np.array([0xFF + 4, ord("a") + 4])) == "\ufffda"  # invalid UTF-8 byte
  with pytest.raises(ValueError, match="260"):
    TOK.decode([300])
  with pytest.raises(dataclasses.FrozenInstanceError):
    TOK.foo = 1  # frozen


# ----------------------------------------------------------------------------
# load_text_corpus on a small synthetic directory
# ----------------------------------------------------------------------------
def _docs_in(stream):
  """Splits a stream at SEP and decodes each document."""
  cuts = np.flatnonzero(stream == TOK.SEP_ID)
  return [TOK.decode(part) for part in np.split(stream, cuts)]


@pytest.fixture
def corpus_dir(tmp_path):
  """40 ASCII text files in 3 sub-folders, plus a non-UTF-8, an empty and a non-matching file.

  Returns (root, {relative path: text}) for the files that should be read.
  """
  texts = {}
  for i in range(40):
    rel = f"d{i % 3}/f{i:02d}.txt"
    texts[rel] = f"document {i}: " + "lorem ipsum " * (i % 7 + 1)
    (tmp_path / rel).parent.mkdir(exist_ok=True)
    (tmp_path / rel).write_text(texts[rel], encoding="utf-8")
  (tmp_path / "d0" / "bad.txt").write_bytes(b"caf\xe9 latin-1 \xff")
  (tmp_path / "d1" / "empty.txt").write_bytes(b"")
  (tmp_path / "d2" / "skip.md").write_text("not matched")
  return tmp_path, dict(sorted(texts.items()))


def _expected_eval(rel, eval_fraction):
  """Independent restatement of the documented split rule."""
  h = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16)
  return h / 2**64 < eval_fraction


def test_corpus_splits_by_file_and_separates_with_sep(corpus_dir):
  root, texts = corpus_dir
  out = load_text_corpus(str(root), pattern="**/*.txt", eval_fraction=0.3)
  assert set(out) == {"train", "eval"}
  assert all(v.dtype == np.int32 and v.ndim == 1 for v in out.values())
  want_eval = [t for rel, t in texts.items() if _expected_eval(rel, 0.3)]
  want_train = [t for rel, t in texts.items() if not _expected_eval(rel, 0.3)]
  assert want_eval and want_train  # the fixture exercises both splits
  # Documents in sorted path order, one SEP between consecutive ones, none at the ends; the
  # non-UTF-8 and the empty file are skipped, and no file appears in both splits.
  assert _docs_in(out["eval"]) == want_eval
  assert _docs_in(out["train"]) == want_train
  assert (out["train"] == TOK.SEP_ID).sum() == len(want_train) - 1
  assert out["train"][0] != TOK.SEP_ID and out["train"][-1] != TOK.SEP_ID


def test_corpus_is_deterministic(corpus_dir):
  root, _ = corpus_dir
  a = load_text_corpus(str(root), pattern="**/*.txt", eval_fraction=0.3)
  b = load_text_corpus(str(root), pattern="**/*.txt", eval_fraction=0.3)
  for split in a:
    np.testing.assert_array_equal(a[split], b[split])


def test_corpus_max_bytes_takes_a_sorted_prefix(corpus_dir):
  root, texts = corpus_dir
  sizes = [len(t.encode()) for t in texts.values()]
  max_bytes = sum(sizes[:25]) + 7  # 25 whole files, then 7 bytes of the 26th
  out = load_text_corpus(str(root), pattern="**/*.txt", eval_fraction=0.3,
                         max_bytes=max_bytes)
  text_tokens = sum(int((s != TOK.SEP_ID).sum()) for s in out.values())
  assert text_tokens == max_bytes
  rels = list(texts)
  read = {rel: texts[rel] for rel in rels[:25]}
  read[rels[25]] = texts[rels[25]][:7]
  assert _docs_in(out["train"]) == [t for r, t in read.items() if not _expected_eval(r, 0.3)]
  assert _docs_in(out["eval"]) == [t for r, t in read.items() if _expected_eval(r, 0.3)]


def test_corpus_errors(corpus_dir, tmp_path):
  root, _ = corpus_dir
  missing = tmp_path / "nope"
  with pytest.raises(ValueError) as e:
    load_text_corpus(str(missing))
  assert str(e.value) == f"data.text.dir: directory '{missing}' does not exist"
  with pytest.raises(ValueError, match=r"data.text.pattern: no files match '\*\*/\*.rst'"):
    load_text_corpus(str(root), pattern="**/*.rst")
  with pytest.raises(ValueError, match="eval split is empty"):
    load_text_corpus(str(root), pattern="**/*.txt", eval_fraction=1e-9)
  with pytest.raises(ValueError, match="data.text.eval_fraction"):
    load_text_corpus(str(root), eval_fraction=1.0)
  with pytest.raises(ValueError, match="data.text.max_bytes"):
    load_text_corpus(str(root), max_bytes=0)


def test_default_corpus_is_the_stdlib():
  out = load_text_corpus(max_bytes=300_000, eval_fraction=0.5)
  assert sum(len(s) for s in out.values()) > 290_000
  assert "import" in TOK.decode(out["train"])
  # Installed packages vary between machines and are never part of the default corpus.
  with pytest.raises(ValueError, match="no files match"):
    load_text_corpus(pattern="site-packages/*.py")


# ----------------------------------------------------------------------------
# chunk_stream
# ----------------------------------------------------------------------------
def test_chunk_stream():
  chunks = chunk_stream(np.arange(11), 3)
  assert chunks.dtype == np.int32
  np.testing.assert_array_equal(chunks, np.arange(9).reshape(3, 3))
  assert chunk_stream(np.arange(6), 3).shape == (2, 3)
  with pytest.raises(ValueError, match="data.text.seq_len=12"):
    chunk_stream(np.arange(11), 12)
  with pytest.raises(ValueError, match="data.text.seq_len=0"):
    chunk_stream(np.arange(11), 0)
