"""MLM masking: rates and replacement split (binomial tolerance), exactly-k budget, whole words,
SpanBERT span lengths, no special tokens, and the gathered-positions loss == full loss."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.model import Model
from experiments.data import tokenizers
from experiments.tasks import masking
from experiments.tasks.base import weighted_cross_entropy
from tests.conftest import random_params, tiny_config

B, T, VOCAB = 256, 96, 260
BYTES = tokenizers.ByteTokenizer()


def options(**overrides):
  base = dict(mask_rate=0.15, mask_fraction=0.8, random_fraction=0.1, masking="token",
              span_p=0.2, max_span=10, predict_only_masked=True)
  return ml_collections.ConfigDict({**base, **overrides})


def text_batch(seed=0):
  """Byte-token rows: CLS, text with SEPs between documents, PAD tails of random length."""
  rng = np.random.default_rng(seed)
  words = ["def", "x", "return", "self", "_init", "a1", "(", ")", ":", " ", "  ", ",", "é"]
  rows = np.zeros((B, T), np.int32)
  for i in range(B):
    pieces = rng.choice(words, size=T)
    row = np.concatenate([[tokenizers.CLS_ID], BYTES.encode("".join(pieces))])
    n = rng.integers(T // 2, T + 1)
    row = row[:n]
    row[rng.integers(2, n, 2)] = tokenizers.SEP_ID
    rows[i, :n] = row
  return jnp.asarray(rows)


@functools.cache
def masker(items):
  return jax.jit(lambda t, r: masking.mask_batch(t, r, options(**dict(items)), BYTES, VOCAB))


def run(tokens, seed=0, **overrides):
  fn = masker(tuple(sorted(overrides.items())))
  return [np.asarray(x) for x in fn(tokens, jax.random.PRNGKey(seed))]


def binomial_ok(successes, trials, p, sigmas=4.0):
  return abs(successes - trials * p) <= sigmas * np.sqrt(trials * p * (1 - p)) + 1


@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_token_masking_exactly_k_and_replacement_split(rate):
  tokens = text_batch()
  corrupted, selected = run(tokens, mask_rate=rate)
  tokens = np.asarray(tokens)
  regular = tokens >= tokenizers.NUM_SPECIAL
  assert not (selected & ~regular).any()  # never PAD / CLS / SEP / MASK
  np.testing.assert_array_equal(selected.sum(1), np.floor(rate * regular.sum(1) + 0.5))
  n = selected.sum()
  to_mask = (corrupted == tokenizers.MASK_ID) & selected
  kept = (corrupted == tokens) & selected
  assert binomial_ok(to_mask.sum(), n, 0.8)
  # "keep" plus the random replacements that drew the original token (1 / 256 of them)
  assert binomial_ok(kept.sum(), n, 0.1 + 0.1 / 256)
  assert (corrupted[~selected] == tokens[~selected]).all()
  assert (corrupted[selected & ~to_mask] >= tokenizers.NUM_SPECIAL).all()


def test_masks_are_a_pure_function_of_the_key():
  tokens = text_batch()
  a, b, c = run(tokens, seed=3), run(tokens, seed=3), run(tokens, seed=4)
  np.testing.assert_array_equal(a[0], b[0])
  assert (a[1] != c[1]).any()


def word_ids(row):
  starts = np.asarray(BYTES.word_starts(jnp.asarray(row)))
  return np.cumsum(starts)


def test_whole_word_masking_takes_words_whole_within_budget():
  tokens = text_batch(1)
  _, selected = run(tokens, masking="whole_word")
  tokens = np.asarray(tokens)
  regular = tokens >= tokenizers.NUM_SPECIAL
  assert not (selected & ~regular).any()
  assert (selected.sum(1) <= np.floor(0.15 * regular.sum(1) + 0.5)).all()
  assert selected.sum() >= 0.9 * np.floor(0.15 * regular.sum(1) + 0.5).sum()
  multi = 0
  for row, sel in zip(tokens, selected):
    ids = word_ids(row)
    for w in np.unique(ids[sel]):
      members = (ids == w) & (row >= tokenizers.NUM_SPECIAL)
      assert sel[members].all()  # all bytes of a selected word
      multi += members.sum() > 1
  assert multi > 100  # multi-byte words were selected, whole


def test_span_lengths_follow_the_clipped_geometric():
  """Span lengths (in words) of the selected spans: mean ~3.8 for p=0.2, clip 10."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, VOCAB, (B, 512)).astype(np.int32))
  tokens = tokens.at[:, 0].set(tokenizers.CLS_ID)

  class EveryTokenAWord:
    num_special, MASK_ID = tokenizers.NUM_SPECIAL, tokenizers.MASK_ID

    @staticmethod
    def word_starts(t):
      return jnp.ones(t.shape, bool)

  sel, unit = jax.jit(lambda t, r: masking.select(
      t, r, rate=0.15, num_special=4, granularity="span",
      word_starts=EveryTokenAWord.word_starts))(tokens, jax.random.PRNGKey(0))
  sel, unit = np.asarray(sel), np.asarray(unit)
  lengths = [np.bincount(u[s]) for u, s in zip(unit, sel)]
  lengths = np.concatenate([x[x > 0] for x in lengths])
  probs = masking.span_length_probs(0.2, 10)
  expected = (np.arange(1, 11) * probs).sum()
  assert expected == pytest.approx(3.8, abs=0.01)  # SpanBERT: mean 3.8
  assert lengths.max() <= 10
  assert abs(lengths.mean() - expected) < 0.25, lengths.mean()
  # selected spans are contiguous runs of their unit
  for u, s in zip(unit[:8], sel[:8]):
    for v in np.unique(u[s]):
      where = np.flatnonzero(u == v)
      assert (np.diff(where) == 1).all() and s[where].all()


def test_span_masking_of_bytes_stays_in_budget_and_off_specials():
  tokens = text_batch(2)
  corrupted, selected = run(tokens, masking="span")
  regular = np.asarray(tokens) >= tokenizers.NUM_SPECIAL
  assert not (selected & ~regular).any()
  assert (selected.sum(1) <= np.floor(0.15 * regular.sum(1) + 0.5)).all()
  assert selected.sum() >= 0.8 * np.floor(0.15 * regular.sum(1) + 0.5).sum()


def test_predict_only_masked_loss_equals_full_logits_loss():
  tokens = text_batch(3)[:8, :32]
  config = tiny_config(vocab_size=VOCAB, max_length=32, num_layers=1)
  model = Model(config)
  corrupted, selected = run(tokens)
  corrupted, selected = corrupted[:8, :32], selected[:8, :32]
  params = random_params(model, {"tokens": corrupted})
  inputs = {"tokens": jnp.asarray(corrupted), "mask": tokens != 0}
  apply = jax.jit(model.apply)
  full, _ = apply({"params": params}, inputs)
  full = weighted_cross_entropy(full, tokens, jnp.asarray(selected, jnp.float32))
  num = masking.num_predictions(0.15, 32)
  positions, weights = masking.predict_positions(jnp.asarray(selected), num)
  assert (np.asarray(weights).sum(1) == selected.sum(1)).all()  # nothing overflows P
  gathered, _ = apply({"params": params}, {**inputs, "predict_positions": positions})
  assert gathered.shape == (8, num, VOCAB)
  part = weighted_cross_entropy(gathered, jnp.take_along_axis(tokens, positions, 1), weights)
  for key in ("loss", "accuracy"):
    np.testing.assert_allclose(part[key][0] / part[key][1], full[key][0] / full[key][1],
                               rtol=1e-6)


def test_bad_masking_options_are_one_line_errors():
  for bad, field in ((dict(mask_rate=0.0), "mask_rate"), (dict(masking="words"), "masking"),
                     (dict(mask_fraction=0.9, random_fraction=0.2), "random_fraction"),
                     (dict(max_span=0), "max_span")):
    with pytest.raises(ConfigError, match=f"mlm.{field}"):
      masking.check_options(options(**bad))


def test_wordpiece_tokenizer_marks_continuations_and_keeps_special_ids(tmp_path):
  texts = ["def tokenize_everything(self): return self.tokenizer"] * 50
  tok = tokenizers.make_tokenizer("wordpiece", vocab_size=120, train_texts=texts,
                                  cache_dir=str(tmp_path), corpus_key="k")
  again = tokenizers.make_tokenizer("wordpiece", vocab_size=120, train_texts=[],
                                    cache_dir=str(tmp_path), corpus_key="k")  # from the cache
  ids = tok.encode("def retokenize_self(fine): return tie")  # unseen words get split
  np.testing.assert_array_equal(ids, again.encode("def retokenize_self(fine): return tie"))
  assert (tok.PAD_ID, tok.CLS_ID, tok.SEP_ID, tok.MASK_ID, tok.num_special) == (0, 1, 2, 3, 5)
  assert ids.min() >= tok.num_special
  pieces = [tok._tokenizer.id_to_token(int(i)) for i in ids]  # pylint: disable=protected-access
  starts = np.asarray(tok.word_starts(jnp.asarray(ids)))
  assert starts.tolist() == [not p.startswith("##") for p in pieces]
  assert not starts.all()  # the small vocabulary splits some words
  with pytest.raises(ConfigError, match="data.text.tokenizer"):
    tokenizers.make_tokenizer("bpe", vocab_size=120, train_texts=texts, cache_dir=".",
                              corpus_key="k")
