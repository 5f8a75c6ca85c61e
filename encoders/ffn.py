"""Position-wise feed-forward layers. Each returns `(y, aux)`; aux is `{}` for dense FFNs.

- `mlp`: Linear -> activation -> Linear (Vaswani et al. 2017; GELU as in BERT).
- `glu`: gated linear unit variants (Shazeer 2020, "GLU Variants Improve Transformer"):
  activation "gelu" gives GEGLU, "silu" gives SwiGLU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax

from encoders import linear, sharding
from encoders.errors import ConfigError
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ConfigError(f"model.ffn.activation={name!r}; allowed: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _dense(c: ModelConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return linear.dense(c, features, axes, name, use_bias=c.use_bias,
                      role="out" if name == "wo" else "in")


@register("ffn", "mlp")
class MLP(nn.Module):
  config: ModelConfig
  activation: str = "gelu"

  def hidden(self, x: jax.Array, act) -> jax.Array:
    """The [.., mlp_dim] hidden activations (overridden by the gated variant)."""
    return act(_dense(self.config, self.config.mlp_dim, ("embed", "mlp"), "wi")(x))

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True):
    c = self.config
    h = sharding.constrain(self.hidden(x, activation(self.activation)), sharding.MLP)
    h = nn.Dropout(c.dropout_rate)(h, deterministic=deterministic)
    return _dense(c, c.dim, ("mlp", "embed"), "wo")(h), {}


@register("ffn", "glu")
class GLU(MLP):
  """act(x W_gate) * (x W_up), then W_out."""

  def hidden(self, x: jax.Array, act) -> jax.Array:
    c = self.config
    gate = act(_dense(c, c.mlp_dim, ("embed", "mlp"), "wi_gate")(x))
    return gate * _dense(c, c.mlp_dim, ("embed", "mlp"), "wi_up")(x)
