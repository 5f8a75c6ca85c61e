"""Which blocks of an Encoder hold the MoE FFN (`model.ffn.every`).

With `every = k`, block i (0-based) is an MoE block when `(i + 1) % k == 0` (the k-th, 2k-th,
... block, as in GShard and Switch Transformer, which place MoE in every other layer); the other
blocks use a dense FFN of the experts' type (`mlp` or `glu`, same activation) of width
`model.mlp_dim`. This is one case of a layer pattern (encoders/patterns.py): the scanned
Encoder scans groups of k blocks (k - 1 dense, then 1 MoE), and a `model.layer_pattern` that
sets the FFN per layer places MoE blocks the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from encoders import patterns

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def every(config: ModelConfig) -> int:
  """`model.ffn.every` for the MoE FFN (checked: an integer >= 1 dividing num_layers), else 1."""
  return patterns.moe_every(config.spec("ffn"), config.num_layers)


def is_moe_layer(config: ModelConfig, layer: int) -> bool:
  return patterns.layer_config(config, layer).spec("ffn")["name"] == "moe"


def num_moe_layers(config: ModelConfig) -> int:
  return sum(is_moe_layer(config, i) for i in range(config.num_layers))

