"""Weight initialisers of kernels and embeddings, by `model.init_method`.

- `normal`: N(0, init_std) everywhere (BERT, Devlin et al. 2019; the default).
- `modernbert`: ModernBERT's "full_megatron" init (Warner et al. 2024; the Megatron-LM scheme of
  Shoeybi et al. 2019): a normal truncated at +-2 standard deviations (torch's `trunc_normal_`
  with a = -2 std, b = 2 std, so the draws' own std is 0.88 std), std `init_std` for the input
  projections (q/k/v, FFN in) and embeddings, `init_std / sqrt(2 * num_layers)` for the
  projections that write into the residual stream (attention out, FFN out) and the MLM head's
  transform, as `src/bert_layers/initialization.py` of ModernBERT's training code.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

INIT_METHODS = ("normal", "modernbert")
ROLES = ("in", "out", "embedding")
CUTOFF = 2.0  # ModernBERT's init_cutoff_factor


def truncated_normal(std: float, cutoff: float = CUTOFF):
  """N(0, std) restricted to [-cutoff * std, cutoff * std] (not rescaled: torch's convention)."""

  def init(key, shape, dtype=jnp.float32):
    draws = jax.random.truncated_normal(key, -cutoff, cutoff, shape, jnp.float32)
    return (draws * std).astype(dtype)

  return init


def weight(config, role: str = "in"):
  """The initialiser of a kernel or embedding table; `role`: in | out | embedding."""
  if role not in ROLES:
    raise ValueError(f"initialiser role {role!r}; allowed: {', '.join(ROLES)}")
  if config.init_method == "normal":
    return nn.initializers.normal(config.init_std)
  std = config.init_std
  if role == "out":
    std /= math.sqrt(2.0 * config.num_layers)
  return truncated_normal(std)
