"""Two-tower pair classification (LRA's document matching, Tay et al. 2021): both documents go
through the same encoder, each is pooled to a vector (u, v), and an MLP classifies
[u, v, u * v, u - v] (the "NLI" interaction of LRA's `ClassifierHeadDual`, after Conneau et al.
2017, InferSent): Dense(mlp_dim) -> ReLU -> Dense(mlp_dim / 2) -> ReLU -> Dense(classes). LRA's
code never switches the NLI interaction on (its matching models concatenate [u, v]) and has
no dropout in the head: `interaction="concat"`, `dropout=False`.

Layout: the model's batch holds the first documents of the B pairs, then the second ones
([2B, length]: rows i and B + i form pair i), so the one encoder call is both towers; the
head returns [B, num_classes].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders.errors import ConfigError
from encoders.heads.classification import check_num_classes
from encoders.heads.pooling import pool
from encoders.linear import dense
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

INTERACTIONS = ("nli", "concat")


def pair_features(u: jax.Array, v: jax.Array, interaction: str) -> jax.Array:
  """[u, v, u * v, u - v] ("nli") or [u, v] ("concat"), along the last axis."""
  if interaction == "nli":
    return jnp.concatenate([u, v, u * v, u - v], -1)
  if interaction == "concat":
    return jnp.concatenate([u, v], -1)
  raise ConfigError(f"model.head.interaction={interaction!r}; allowed: "
                    f"{', '.join(INTERACTIONS)}")


@register("head", "pair_classification")
class PairClassificationHead(nn.Module):
  config: ModelConfig
  num_classes: int = 0  # 0 = set by the match task from its data
  pooling: str = "cls"  # LRA's matching config pools CLS
  interaction: str = "nli"  # nli: [u, v, u*v, u-v] (LRA) | concat: [u, v]
  mlp_dim: int = 0  # 0 = model.mlp_dim (LRA: the model's mlp_dim)
  dropout: bool = True  # model.dropout_rate after the first layer (LRA: none)
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    check_num_classes(self.num_classes, "match")
    if hidden.shape[0] % 2:
      raise ConfigError(f"pair_classification: a batch of {hidden.shape[0]} rows; it holds "
                        "the first documents, then the second ones (an even number)")
    pooled = pool(hidden, inputs.get("mask"), self.pooling)
    half = hidden.shape[0] // 2
    x = pair_features(pooled[:half], pooled[half:], self.interaction)
    width = self.mlp_dim or c.mlp_dim
    x = nn.relu(dense(c, width, ("embed", "mlp"), "mlp")(x))
    if self.dropout:
      x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    x = nn.relu(dense(c, width // 2, ("mlp", "embed"), "mlp2")(x))
    return dense(c, self.num_classes, ("mlp", "classes"), "classifier", out_dtype=jnp.float32)(x)
