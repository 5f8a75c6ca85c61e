"""Linear recurrences h_t = a_t h_{t-1} + b_t evaluated in parallel, with resets.

`linear_scan` evaluates the recurrence along the length with `jax.lax.associative_scan` and the
operator (a1, b1) . (a2, b2) = (a2 a1, a2 b1 + b2) (Blelloch 1990, "Prefix Sums and Their
Applications"; as S5's parallel scan). A reset is folded into the elements: where a segment
starts, a_t = 0, so the carried state is dropped and h_t = b_t, which keeps packed sequences
apart exactly. `chunked_scan` bounds memory: it runs a chunk body (an associative scan over
`chunk_size` positions; Mamba may also loop over them) under `lax.scan`, carrying the state
from chunk to chunk.

A reverse (right-to-left) scan is the forward scan of the flipped sequence, segment ids flipped
too; with the inputs b of padded positions zeroed, a reverse scan over a padded row starts at
its last real token with a zero state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def combine(earlier: tuple[jax.Array, jax.Array],
            later: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """The associative operator of h_t = a_t h_{t-1} + b_t: two steps as one."""
  a1, b1 = earlier
  a2, b2 = later
  return a2 * a1, a2 * b1 + b2


def segment_starts(segment_ids: jax.Array | None, shape: tuple[int, int]) -> jax.Array:
  """Bool [batch, length]: True where a token's left neighbour is in another segment (all False
  without segment ids: the row's first state starts from zero anyway)."""
  if segment_ids is None:
    return jnp.zeros(shape, bool)
  first = jnp.zeros((shape[0], 1), bool)
  return jnp.concatenate([first, segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)


def linear_scan(a: jax.Array, b: jax.Array, starts: jax.Array,
                h0: jax.Array | None = None) -> jax.Array:
  """All states h [batch, length, ...] of h_t = a_t h_{t-1} + b_t with h_{-1} = h0 (zeros when
  None), the state reset (a_t = 0) where `starts` [batch, length] is True. a broadcasts to b."""
  a = jnp.where(starts.reshape(starts.shape + (1,) * (b.ndim - 2)), 0, a)
  a = jnp.broadcast_to(a, b.shape)
  decay, h = jax.lax.associative_scan(combine, (a, b), axis=1)
  return h if h0 is None else h + decay * h0[:, None]


def chunked_scan(chunk_fn: Callable[[Any, Any], tuple[Any, Any]], inputs: Any, h0: Any,
                 chunk_size: int) -> Any:
  """Outputs [batch, length, ...] of `chunk_fn(h, chunk_inputs) -> (h, chunk_outputs)` run over
  consecutive chunks of `chunk_size` positions of `inputs` (a pytree of [batch, length, ...]
  arrays) with `lax.scan`, the state h carried across chunks. The length is zero-padded to a
  multiple of the chunk size, so `chunk_fn` must treat zero inputs as steps that leave h
  unchanged. The body is rematerialised: the backward pass keeps one state per chunk, not
  every position's intermediates."""
  length = jax.tree.leaves(inputs)[0].shape[1]
  size = min(chunk_size, length)
  num = -(-length // size)

  def split(x):
    x = jnp.pad(x, [(0, 0), (0, num * size - length)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(x.shape[0], num, size, *x.shape[2:]), 0, 1)

  def join(y):
    y = jnp.swapaxes(y, 0, 1)
    return y.reshape(y.shape[0], num * size, *y.shape[3:])[:, :length]

  _, outputs = jax.lax.scan(jax.checkpoint(chunk_fn), h0, jax.tree.map(split, inputs))
  return jax.tree.map(join, outputs)
