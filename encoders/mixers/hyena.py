"""`hyena`: an order-2 Hyena operator with a two-sided implicit long filter.

Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional Language Models". The input is
projected to three streams (x0, x1, v) of width dim, each filtered by a short depthwise
convolution; then v <- x1 * v, v <- h * v + bias * v (a long convolution by FFT) and y = x0 * v,
projected back. The long filter h is implicit, as in the reference's `HyenaFilter`: a positional
encoding of the lag (the lag itself and `(emb_dim - 1) / 2` cosine/sine bands) goes through an
MLP with sine activations (one learned frequency per unit, shared by its layers) and is
multiplied by an exponential decay window exp(-|t| delta_c), delta fixed per channel between
the reference's fast and slow decay rates. The reference filter is causal; this encoder's is
two-sided: it is evaluated at the lags -(n-1) .. n-1 and applied as a non-causal FFT
convolution (encoders/mixers/fftconv.py), and the short convolution is centred. Lags are
measured in units of `model.max_length` (the reference's `l_max`), so the filter of a lag does
not depend on the input length.

Padded positions are zeroed after the input projection and again before the long convolution,
so real outputs never read them. The FFT mixes the whole row: packed rows are a one-line error.
The filter and the convolution run in float32; the output is cast to the compute dtype.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import linear, sharding
from encoders.errors import ConfigError
from encoders.mixers.base import TokenMixer, uniform, zero_padding
from encoders.mixers.fftconv import fft_conv
from encoders.needs import ParameterGroup
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

# exp(-|t| delta) reaches this value at |t| = 0.3 (fastest channel) .. 1.5 (slowest) x max_length.
DECAY_TARGET, FAST_DECAY, SLOW_DECAY = 1e-2, 0.3, 1.5


class ImplicitFilter(nn.Module):
  """h [channels, len(lags)] = MLP(positional encoding of lag / max_length) * decay window."""
  config: ModelConfig
  channels: int
  width: int
  emb_dim: int
  sine_freq: float

  @nn.compact
  def __call__(self, lags: jax.Array) -> jax.Array:
    t = (lags / self.config.max_length).astype(jnp.float32)[:, None]  # [m, 1], signed
    bands = (self.emb_dim - 1) // 2
    phase = 2 * math.pi * t * jnp.linspace(1e-4, bands - 1, bands)
    h = jnp.concatenate([t, jnp.cos(phase), -jnp.sin(phase)], axis=-1)  # t, exp(-i f w)
    freq = self.param("freq", sharding.param(nn.initializers.constant(self.sine_freq), (None,)),
                      (self.width,), jnp.float32)

    def linear(features, name, axes=(None, None), use_bias=True):
      bound = h.shape[-1] ** -0.5  # torch nn.Linear's default init, as the reference
      return nn.Dense(features, use_bias=use_bias, dtype=jnp.float32, param_dtype=jnp.float32,
                      kernel_init=sharding.param(uniform(bound), axes),
                      bias_init=sharding.param(uniform(bound), axes[1:]), name=name)

    for i in range(3):
      h = jnp.sin(freq * linear(self.width, f"dense_{i}")(h))
    h = linear(self.channels, "out", (None, "mlp"), use_bias=False)(h)
    deltas = jnp.linspace(math.log(DECAY_TARGET) / SLOW_DECAY,
                          math.log(DECAY_TARGET) / FAST_DECAY, self.channels)
    return (h * jnp.exp(-jnp.abs(t) * jnp.abs(deltas))).T


def centred_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """Depthwise y_t = bias + sum_k kernel[k] x_{t + k - r} of x [batch, n, channels], kernel
  [2r + 1, channels]; positions outside the row read zero."""
  n, r = x.shape[1], kernel.shape[0] // 2
  padded = jnp.pad(x, ((0, 0), (r, r), (0, 0)))
  return bias + sum(kernel[k] * padded[:, k:k + n] for k in range(kernel.shape[0]))


@register("attention", "hyena")
class Hyena(TokenMixer):
  """Order-2 bidirectional Hyena (see module doc)."""
  filter_order: int = 64  # width of the implicit filter's MLP
  emb_dim: int = 3  # positional features of the filter: the lag + (emb_dim - 1) / 2 cos/sin bands
  short_filter_order: int = 3  # taps of the short depthwise convolution (odd: centred)
  sine_freq: float = 1.0  # initial frequency of the filter's sine activations (reference w)
  supports_segments = False

  def check_options(self) -> None:
    self.check_positive("filter_order", "short_filter_order")
    if self.emb_dim < 3 or self.emb_dim % 2 == 0:
      raise ConfigError(f"model.attention.emb_dim={self.emb_dim} must be odd and >= 3 (the lag, "
                        "then cosine/sine pairs)")
    if self.short_filter_order % 2 == 0:
      raise ConfigError(f"model.attention.short_filter_order={self.short_filter_order} must be "
                        "odd (a centred convolution)")

  def parameter_groups(self) -> tuple[ParameterGroup, ...]:
    """The implicit filter's MLP takes no weight decay (the reference's `HyenaFilter` sets
    `weight_decay: wd` with wd 0 on every parameter of its `implicit_filter`)."""
    return (ParameterGroup(("filter/*",), decay=False),)

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    del segment_ids, deterministic  # segments refused by check_inputs
    c = self.config
    dim, n = c.dim, x.shape[1]
    init = nn.initializers.normal(c.init_std)
    u = zero_padding(linear.dense(c, 3 * dim, ("embed", "mlp"), "in_proj", init=init)(x), mask)
    conv_init = uniform(self.short_filter_order ** -0.5)
    kernel = self.param("short_kernel", sharding.param(conv_init, (None, "mlp")),
                        (self.short_filter_order, 3 * dim), c.params_dtype)
    bias = self.param("short_bias", sharding.param(conv_init, ("mlp",)), (3 * dim,),
                      c.params_dtype)
    u = centred_conv(u.astype(jnp.float32), kernel.astype(jnp.float32),
                     bias.astype(jnp.float32))
    x0, x1, v = u[..., :dim], u[..., dim:2 * dim], u[..., 2 * dim:]
    v = zero_padding(x1 * v, mask)
    h = ImplicitFilter(c, dim, self.filter_order, self.emb_dim, self.sine_freq,
                       name="filter")(jnp.arange(-(n - 1), n))
    filter_bias = self.param("filter_bias", sharding.param(nn.initializers.normal(1.0),
                                                           ("mlp",)), (dim,), jnp.float32)
    y = x0 * (fft_conv(v, h) + filter_bias * v)
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.MLP)
    return linear.dense(c, dim, ("mlp", "embed"), "out_proj", init=init)(y)
