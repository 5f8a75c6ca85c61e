"""Routers: which experts each token goes to, with which gate, and the router aux terms.

All routing math is float32. `mask` ([tokens] bool) marks real tokens; padding gets gate 0,
takes no capacity and is left out of every loss and metric.

- `topk`: token choice, each token picks `k` experts (Shazeer et al. 2017, "Outrageously Large
  Neural Networks"; GShard). `order="softmax_then_topk"` takes the top-k of the softmax over all
  experts (optionally renormalised to sum to 1); `order="topk_then_softmax"` takes a softmax
  over the k largest logits only ("Upcycling Large Language Models into Mixture of Experts",
  2024, finds softmax-then-topK better).
- `switch`: top-1, gate = the softmax probability, no renormalisation (Fedus et al. 2021).
- `expert_choice`: every expert picks its `capacity` highest-scoring tokens (Zhou et al. 2022,
  "Mixture-of-Experts with Expert Choice Routing"); balanced by construction; a token may get
  0..E experts. Fine for encoders: nothing is causal.
- `hash`: expert = a fixed hash of the token id, gate 1, no parameters and no balancing loss
  (Roller et al. 2021, "Hash Layers For Large Sparse Models").
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

ROUTERS = ("topk", "switch", "expert_choice", "hash")
ORDERS = ("softmax_then_topk", "topk_then_softmax")


def token_choice(logits: jax.Array, k: int, order: str, renormalize: bool,
                 mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logits [N, E] -> (expert [N, k] int32, gate [N, k] f32), gates zero on padding."""
  if order == "softmax_then_topk":
    gate, expert = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), k)
    if renormalize:
      gate = gate / jnp.sum(gate, axis=-1, keepdims=True)
  else:
    top, expert = jax.lax.top_k(logits, k)
    gate = jax.nn.softmax(top, axis=-1)
  return expert.astype(jnp.int32), gate * mask[:, None]


def hash_experts(token_ids: jax.Array, num_experts: int) -> jax.Array:
  """A fixed multiplicative (Knuth) hash of each token id -> expert [N] int32."""
  h = token_ids.astype(jnp.uint32) * jnp.uint32(2654435761)
  h = h ^ (h >> 16)
  return (h % jnp.uint32(num_experts)).astype(jnp.int32)


def expert_choice(logits: jax.Array, capacity: int,
                  mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logits [N, E] -> (token [E, C] int32, gate [E, C] f32): each expert's top-C tokens by
  the token's softmax probability over experts. Padding is picked only when an expert has
  fewer than C real tokens to choose from, and then with gate 0."""
  probs = jax.nn.softmax(logits, axis=-1)
  score = jnp.where(mask[:, None], probs, -1.0)
  _, token = jax.lax.top_k(score.T, capacity)
  gate = jnp.take_along_axis(probs.T, token, axis=1) * mask[token]
  return token.astype(jnp.int32), gate


def capacity(num_tokens: int, k: int, factor: float, num_experts: int) -> int:
  """Slots per expert: ceil(k * tokens * factor / E), at least 1, at most all tokens."""
  slots = math.ceil(round(k * num_tokens * factor / num_experts, 6))
  return int(min(num_tokens, max(1, slots)))


@functools.lru_cache(maxsize=64)
def _capacity_table(num_tokens: int, k: int, factor: float, num_experts: int) -> np.ndarray:
  return np.asarray([capacity(n, k, factor, num_experts) for n in range(num_tokens + 1)],
                    np.int32)


def real_capacity(num_real: jax.Array, num_tokens: int, k: int, factor: float,
                  num_experts: int) -> jax.Array:
  """`capacity` of the real tokens (a traced count <= num_tokens): a lookup in the static table
  of capacity(0 .. num_tokens), so exactly the integer the formula gives. Padding does not add
  slots; the dispatch buffer keeps the static capacity(num_tokens) slots, the rest unused."""
  return jnp.asarray(_capacity_table(num_tokens, k, factor, num_experts))[num_real]


def load_balance_loss(probs: jax.Array, expert: jax.Array, gate_mask: jax.Array,
                      mask: jax.Array) -> jax.Array:
  """Switch Transformer's auxiliary loss E * sum_e f_e * P_e over real tokens.

  f_e: fraction of the routed (token, slot) assignments that chose expert e (before any
  capacity drop); P_e: mean router probability of e. Equals 1 when the assignments are
  uniform over the experts, and is larger the more both concentrate on the same experts.
  """
  num_experts = probs.shape[-1]
  f = expert_fractions(expert, gate_mask, num_experts)
  real = jnp.maximum(jnp.sum(mask), 1)
  p = jnp.sum(probs * mask[:, None], axis=0) / real
  return num_experts * jnp.sum(f * p)


def expert_fractions(expert: jax.Array, routed: jax.Array, num_experts: int) -> jax.Array:
  """Fraction of routed assignments per expert [E]; expert/routed are [N, k]."""
  counts = jnp.sum(jax.nn.one_hot(expert, num_experts) * routed[..., None], axis=(0, 1))
  return counts / jnp.maximum(jnp.sum(counts), 1)


def z_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """ST-MoE router z-loss (Zoph et al. 2022): mean over real tokens of logsumexp(logits)^2."""
  z = jax.nn.logsumexp(logits, axis=-1) ** 2
  return jnp.sum(z * mask) / jnp.maximum(jnp.sum(mask), 1)


def entropy(probs: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean entropy (nats) of the router distribution over real tokens."""
  h = -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)
  return jnp.sum(h * mask) / jnp.maximum(jnp.sum(mask), 1)
