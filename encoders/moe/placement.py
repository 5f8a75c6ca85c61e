"""Which blocks of an Encoder hold the MoE FFN (`model.ffn.every`).

With `every = k`, block i (0-based) is an MoE block when `(i + 1) % k == 0` (the k-th, 2k-th,
... block, as in GShard and Switch Transformer, which place MoE in every other layer); the other
blocks use a dense FFN of the experts' type (`mlp` or `glu`, same activation) of width
`model.mlp_dim`. The scanned Encoder scans groups of k blocks (k - 1 dense, then 1 MoE).
"""

from __future__ import annotations

from encoders.config import ModelConfig
from encoders.errors import ConfigError


def every(config: ModelConfig) -> int:
  """Blocks per group: `model.ffn.every` for the MoE FFN, else 1."""
  spec = config.spec("ffn")
  if spec["name"] != "moe":
    return 1
  k = spec.get("every", 1)
  if not isinstance(k, int) or k < 1:
    raise ConfigError(f"model.ffn.every={k!r} must be an integer >= 1")
  if config.num_layers % k:
    raise ConfigError(f"model.ffn.every={k} must divide model.num_layers={config.num_layers}")
  return k


def is_moe_layer(config: ModelConfig, layer: int) -> bool:
  return config.spec("ffn")["name"] == "moe" and (layer + 1) % every(config) == 0


def num_moe_layers(config: ModelConfig) -> int:
  return config.num_layers // every(config) if config.spec("ffn")["name"] == "moe" else 0


def dense_ffn_spec(config: ModelConfig) -> dict:
  """The dense FFN used by the non-MoE blocks of an MoE model."""
  spec = config.spec("ffn")
  return {"name": spec.get("expert", "mlp"), "activation": spec.get("activation", "gelu")}


def layer_config(config: ModelConfig, layer: int) -> ModelConfig:
  """The config block `layer` is built from (the dense FFN where it is not an MoE block)."""
  if config.spec("ffn")["name"] != "moe" or is_moe_layer(config, layer):
    return config
  return config.replace(ffn=dense_ffn_spec(config))
