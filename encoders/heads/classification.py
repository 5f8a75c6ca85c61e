"""Sequence classification from a pooled vector (`cls`: the first token, as BERT; `mean`: the
mask-aware average, as Sentence-BERT, Reimers & Gurevych 2019), with BERT's optional tanh
pooler. With `max_segments` > 0 and `inputs["segment_ids"]` (packed rows, Krell et al. 2021)
it pools each segment 1..max_segments separately: [batch, max_segments, classes] (`cls` = the
segment's first token). `lra_classification`: LRA's classifier head (Tay et al. 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders.errors import ConfigError
from encoders.heads.pooling import pool, pool_segments
from encoders.linear import dense
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def check_num_classes(num_classes: int, task: str) -> None:
  """A classifier head needs its class count; 0 means `task` was to set it from its data."""
  if num_classes <= 0:
    raise ConfigError(f"model.head.num_classes={num_classes} must be positive (the {task} "
                      "task sets 0 from its data)")


@register("head", "classification")
class ClassificationHead(nn.Module):
  config: ModelConfig
  num_classes: int = 0  # 0 = set by the task from its data (classify); must be > 0 when built
  pooling: str = "cls"
  pooler: bool = True  # BERT's dense + tanh on the pooled vector
  max_segments: int = 0  # > 0: one output per packed segment (given inputs["segment_ids"])
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    check_num_classes(self.num_classes, "classify")
    if self.max_segments and inputs.get("segment_ids") is not None:
      x = pool_segments(hidden, inputs.get("mask"), inputs["segment_ids"], self.max_segments,
                        self.pooling)
    else:
      x = pool(hidden, inputs.get("mask"), self.pooling)
    if self.pooler:
      x = jnp.tanh(dense(c, c.dim, ("embed", "mlp"), "pooler")(x))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    return dense(c, self.num_classes, ("embed", "classes"), "classifier", out_dtype=jnp.float32)(x)


@register("head", "lra_classification")
class LRAClassificationHead(nn.Module):
  """LRA's classifier head (Tay et al. 2021; `classifier_head` in LRA's
  lra_benchmarks/models/layers/common_layers.py): pool, Dense(mlp_dim) -> ReLU ->
  Dense(num_classes), no dropout, no tanh. `mean` averages every position, padding included
  (LRA's `jnp.mean(encoded, axis=1)`); `cls` takes the first."""
  config: ModelConfig
  num_classes: int = 0  # 0 = set by the task from its data (classify); must be > 0 when built
  pooling: str = "mean"
  reads_all_layers = False

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    check_num_classes(self.num_classes, "classify")
    x = pool(hidden, None, self.pooling)  # no mask: LRA's mean counts padding
    x = nn.relu(dense(c, c.mlp_dim, ("embed", "mlp"), "mlp")(x))
    return dense(c, self.num_classes, ("mlp", "classes"), "logits", out_dtype=jnp.float32)(x)
