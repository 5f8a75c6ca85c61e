"""The one dense (fully connected) layer of the encoder's sub-layers: FFNs, heads, token mixers.

`dense(c, features, axes, name)` is an `nn.Dense` that reads its input in the compute dtype,
accumulates in float32 (encoders/precision.py) and returns the compute dtype (or `out_dtype`),
with parameters in the parameter dtype, the kernel initialised by `model.init_method` for its
`role` (encoders/initializers.py: `in`, or `out` for projections into the residual stream), a
zero bias, and logical axes `axes` = (input, output) on the kernel and the output's on the bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn

from encoders import initializers, precision, sharding

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def dense(c: ModelConfig, features: int, axes: tuple[str | None, str | None], name: str, *,
          use_bias: bool = True, role: str = "in", out_dtype=None, init=None, bias_init=None,
          dtype=None) -> nn.Dense:
  """See the module doc; `init` / `bias_init` (unboxed initialisers) replace the kernel's and
  the bias's, `dtype` the compute dtype."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype or c.compute_dtype, param_dtype=c.params_dtype,
      kernel_init=sharding.param(init or initializers.weight(c, role), axes),
      bias_init=sharding.param(bias_init or nn.initializers.zeros, axes[1:]),
      dot_general=precision.dot_general(out_dtype), name=name)
