"""Token selection for masked language modelling, on device and pure in (rng, tokens).

Three granularities (`mlm.masking`):
- `token`: every regular token is its own unit (BERT, Devlin et al. 2019);
- `whole_word`: all tokens of a word are selected together (BERT's whole-word masking; word
  boundaries from the tokenizer: byte runs of letters/digits/underscore, or WordPiece `##`
  continuations);
- `span`: contiguous spans of whole words with lengths drawn from a geometric distribution
  (p = `span_p`, clipped at `max_span` words; SpanBERT, Joshi et al. 2020: p=0.2, clip 10, mean
  3.8 words).

Budget: exactly-k, as BERT's `create_pretraining_data.py`: a row with n regular tokens gets
k = round(mask_rate * n) selected tokens. Units (or spans) are visited in a random order and
taken while the running total stays <= k; units that would overflow are skipped and, as in
BERT's loop, later smaller ones still fill the budget (FILL_PASSES vectorised prefix passes over
the units that still fit). Token-level masking selects exactly k, word/span masking at most k.
Hence a row of length T never holds more than P = round(mask_rate * T) selected tokens, the
static number of `predict_positions` the MLM head evaluates: nothing ever overflows, and the
loss over those P gathered positions equals the full-logits loss over the selected positions.

Special tokens (ids below the tokenizer's `num_special`: PAD, CLS, SEP, MASK, UNK) are never
selected, and a word or span never crosses one (segments of a packed row stay apart). Of the
selected units, `mask_fraction` become [MASK], `random_fraction` a uniformly random regular
token and the rest stay; the choice is made per unit (per token, word or span; SpanBERT
replaces at the span level).

Everything is vectorised jnp (argsort + scatter per row), so masking runs inside the jitted
step and is a pure function of (seed, step) without host work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from encoders.errors import ConfigError

GRANULARITIES = ("token", "whole_word", "span")
FILL_PASSES = 4  # greedy passes over the units that still fit the budget


def check_options(m) -> None:
  """One-line errors for bad `config.mlm` values (called before anything compiles)."""
  if not 0.0 < m.mask_rate < 1.0:
    raise ConfigError(f"mlm.mask_rate={m.mask_rate}; must be in (0, 1)")
  if m.mask_fraction < 0 or m.random_fraction < 0 or m.mask_fraction + m.random_fraction > 1:
    raise ConfigError(f"mlm.mask_fraction={m.mask_fraction}, mlm.random_fraction="
                      f"{m.random_fraction}; each >= 0 and their sum <= 1")
  if m.masking not in GRANULARITIES:
    raise ConfigError(f"mlm.masking={m.masking!r}; allowed: {', '.join(GRANULARITIES)}")
  if not 0.0 < m.span_p <= 1.0 or m.max_span < 1:
    raise ConfigError(f"mlm.span_p={m.span_p}, mlm.max_span={m.max_span}; need 0 < span_p <= 1 "
                      "and max_span >= 1")


def num_predictions(rate: float, length: int) -> int:
  """Static P: the most tokens a row of `length` can have selected."""
  return max(1, int(math.floor(rate * length + 0.5)))


def span_length_probs(p: float, max_span: int) -> np.ndarray:
  """Geometric(p) over 1..max_span, renormalised (SpanBERT's clipped distribution)."""
  lengths = np.arange(1, max_span + 1)
  probs = p * (1 - p) ** (lengths - 1)
  return probs / probs.sum()


def _scatter(values: jax.Array, index: jax.Array, length: int, op: str) -> jax.Array:
  """Per-row scatter of values [B, T] to index [B, T] into [B, length] zeros."""
  def row(v, i):
    return getattr(jnp.zeros(length, v.dtype).at[i], op)(v)
  return jax.vmap(row)(values, index)


def select(tokens: jax.Array, rng: jax.Array, *, rate: float, num_special: int,
           granularity: str = "token",
           word_starts: Callable[[jax.Array], jax.Array] | None = None,
           span_p: float = 0.2, max_span: int = 10) -> tuple[jax.Array, jax.Array]:
  """(selected bool [B, T], unit id [B, T]): which tokens to predict and the unit (token, word
  or span, numbered per row) each belongs to."""
  batch, length = tokens.shape
  order_rng, span_rng = jax.random.split(rng)
  regular = tokens >= num_special
  special_before = jnp.pad(~regular[:, :-1], ((0, 0), (1, 0)))
  if granularity == "token":
    starts = jnp.ones_like(regular)
  else:
    starts = word_starts(tokens) | ~regular | special_before
  unit = jnp.cumsum(starts, axis=-1) - 1
  if granularity == "span":  # group consecutive words into geometric-length spans
    logits = jnp.log(jnp.asarray(span_length_probs(span_p, max_span)))
    lengths = jax.random.categorical(span_rng, logits, shape=(batch, length)) + 1
    ends = jnp.minimum(jnp.cumsum(lengths, axis=-1), length)
    boundary = _scatter(jnp.ones_like(ends, bool), ends, length + 1, "set")[:, :length]
    special_unit = _scatter(~regular, unit, length, "max")
    after_special = jnp.pad(special_unit[:, :-1], ((0, 0), (1, 0)))
    boundary = boundary | special_unit | after_special
    boundary = boundary.at[:, 0].set(True)
    unit = jnp.take_along_axis(jnp.cumsum(boundary, axis=-1) - 1, unit, axis=-1)
  size = _scatter(regular.astype(jnp.int32), unit, length, "add")
  budget = jnp.floor(rate * regular.sum(-1) + 0.5).astype(jnp.int32)
  priority = jnp.where(size > 0, jax.random.uniform(order_rng, (batch, length)), 2.0)
  order = jnp.argsort(priority, axis=-1)
  sorted_size = jnp.take_along_axis(size, order, axis=-1)
  take = jnp.zeros_like(regular)
  left = budget
  for _ in range(FILL_PASSES):  # each pass: the random-order prefix of the units that still fit
    fits = ~take & (sorted_size > 0) & (sorted_size <= left[:, None])
    new = fits & (jnp.cumsum(jnp.where(fits, sorted_size, 0), axis=-1) <= left[:, None])
    take = take | new
    left = left - jnp.where(new, sorted_size, 0).sum(-1)
  chosen = _scatter(take, order, length, "set")
  selected = jnp.take_along_axis(chosen, unit, axis=-1) & regular
  return selected, unit


def corrupt(tokens: jax.Array, selected: jax.Array, unit: jax.Array, rng: jax.Array, *,
            mask_id: int, num_special: int, vocab_size: int, mask_fraction: float,
            random_fraction: float) -> jax.Array:
  """BERT's replacement: per selected unit, [MASK] / random regular token / unchanged."""
  kind_rng, random_rng = jax.random.split(rng)
  u = jnp.take_along_axis(jax.random.uniform(kind_rng, tokens.shape), unit, axis=-1)
  to_mask = selected & (u < mask_fraction)
  to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
  random_tokens = jax.random.randint(random_rng, tokens.shape, num_special, vocab_size)
  out = jnp.where(to_mask, mask_id, jnp.where(to_random, random_tokens, tokens))
  return out.astype(tokens.dtype)


def predict_positions(selected: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """(positions int32 [B, num], weights f32 [B, num]): the selected positions in order, padded
  with position 0 at weight 0."""
  order = jnp.argsort(~selected, axis=-1, stable=True)[:, :num].astype(jnp.int32)
  weights = jnp.arange(num)[None, :] < selected.sum(-1, keepdims=True)
  return order, weights.astype(jnp.float32)


def mask_batch(tokens: jax.Array, rng: jax.Array, m, tokenizer, vocab_size: int):
  """`config.mlm` masking of a token batch: (corrupted tokens, selected bool [B, T])."""
  select_rng, corrupt_rng = jax.random.split(rng)
  selected, unit = select(tokens, select_rng, rate=m.mask_rate,
                          num_special=tokenizer.num_special, granularity=m.masking,
                          word_starts=tokenizer.word_starts, span_p=m.span_p,
                          max_span=m.max_span)
  corrupted = corrupt(tokens, selected, unit, corrupt_rng, mask_id=tokenizer.MASK_ID,
                      num_special=tokenizer.num_special, vocab_size=vocab_size,
                      mask_fraction=m.mask_fraction, random_fraction=m.random_fraction)
  return corrupted, selected
