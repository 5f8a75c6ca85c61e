"""Cross-layer connections: how the input of block i is built from all outputs so far.

A connection is called as `connection(history) -> x`, where `history` lists the embedding
output followed by the output of every block so far. Inside a block the sub-layers are always
residual (norm placement is `model.norm_position`); the connection decides what flows *between*
blocks.

- `residual`: the standard residual stream (He et al. 2016; Vaswani et al. 2017): the next
  input is the last output. It keeps no history, so identical blocks can run under `nn.scan`
  (fast compile for deep models).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from encoders.config import ModelConfig
from encoders.registry import register


@register("connection", "residual")
class Residual(nn.Module):
  config: ModelConfig
  depth: int = 0  # number of block outputs in `history` when called (set by the Encoder)
  keeps_history = False  # the Encoder may drop all but the last output, and scan blocks

  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    return history[-1]
