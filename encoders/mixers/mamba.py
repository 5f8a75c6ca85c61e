"""`mamba`: a bidirectional selective state space mixer.

Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces": the input is
projected to (x, z) of width expand * dim; x goes through a short depthwise causal convolution
and SiLU, then a selective SSM whose step size dt (softplus of a rank-`dt_rank` projection), B
and C depend on the token: h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, with
A = -exp(A_log) initialised S4D-Real (A_n = -(n + 1)); the output is y * silu(z), projected back.
Bidirectional as Caduceus (Schiff et al. 2024, "Caduceus: Bi-Directional Equivariant Long-Range
DNA Sequence Modeling") and Vision Mamba (Zhu et al. 2024, "Vision Mamba: Efficient Visual
Representation Learning with Bidirectional State Space Model", its "v2" block): the in and out
projections are shared; each direction has its own convolution, projections, A and D; the
backward direction runs on the flipped row; the two outputs are summed before the gate.

The selective scan (`selective_scan`) is an associative scan within chunks of `chunk_size`
positions and a `lax.scan` carrying the state across chunks, so memory stays O(batch x chunk x
d_inner x state) per chunk (encoders/mixers/scan.py). Packing is exact: the scan resets its
state at segment boundaries and the convolution taps that would read another segment are
zeroed, in both directions. Padded positions are zeroed before the convolution and after it,
so no state reads them and the backward scan starts at each row's last real token. The scan
runs in float32; A_log and D are float32 and, as in the reference, take no weight decay.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.mixers import scan
from encoders.mixers.base import TokenMixer, dense, uniform, zero_padding
from encoders.registry import register

DT_FLOOR = 1e-4  # the reference's dt_init_floor


def causal_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array,
                segment_ids: jax.Array | None) -> jax.Array:
  """Depthwise causal convolution y_t = bias + sum_lag kernel[lag] x_{t - lag} of x [batch, n,
  channels] with kernel [taps, channels]; taps that reach before the row or into another
  segment read zero."""
  n = x.shape[1]
  y = bias
  for lag in range(kernel.shape[0]):
    shifted = jnp.pad(x, ((0, 0), (lag, 0), (0, 0)))[:, :n]
    if segment_ids is not None and lag:
      previous = jnp.pad(segment_ids, ((0, 0), (lag, 0)))[:, :n]
      shifted = jnp.where((previous == segment_ids)[..., None], shifted, 0)
    y = y + kernel[lag] * shifted
  return y


def selective_scan(u: jax.Array, dt: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array,
                   starts: jax.Array, chunk_size: int) -> jax.Array:
  """y_t = C_t . h_t, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t (h reset where `starts`), for u
  and dt [batch, n, channels], A [channels, state], B and C [batch, n, state], starts [batch, n]
  bool; float32, chunked (see module doc). (The reference's `selective_scan_ref` without D.)"""

  def chunk(h, inputs):
    u, dt, b, c, starts = inputs
    decay = jnp.exp(dt[..., None] * a)  # [batch, chunk, channels, state]
    drive = (dt * u)[..., None] * b[:, :, None, :]
    states = scan.linear_scan(decay, drive, starts, h)
    return states[:, -1], jnp.einsum("bsdn,bsn->bsd", states, c)

  h0 = jnp.zeros((u.shape[0], u.shape[2], a.shape[1]), jnp.float32)
  return scan.chunked_scan(chunk, (u, dt, b, c, starts), h0, chunk_size)


class MambaDirection(nn.Module):
  """One direction, left to right: causal conv, SiLU, dt/B/C projections, selective scan, D.
  Takes x [batch, n, inner] (padded positions zero) -> y [batch, n, inner] float32."""
  config: ModelConfig
  inner: int
  state_size: int
  conv_size: int
  dt_rank: int
  dt_min: float
  dt_max: float
  chunk_size: int

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None,
               segment_ids: jax.Array | None) -> jax.Array:
    c, inner, state = self.config, self.inner, self.state_size

    def param(name, init, axes, shape, dtype):
      return self.param(name, sharding.param(init, axes), shape, dtype)

    # torch Conv1d's default init (bound 1 / sqrt(fan_in), fan_in = taps), as the reference.
    conv_init = uniform(self.conv_size ** -0.5)
    kernel = param("conv_kernel", conv_init, (None, "mlp"), (self.conv_size, inner),
                   c.params_dtype)
    bias = param("conv_bias", conv_init, ("mlp",), (inner,), c.params_dtype)
    u = causal_conv(x, kernel.astype(x.dtype), bias.astype(x.dtype), segment_ids)
    u = zero_padding(jax.nn.silu(u), mask)
    projected = dense(c, self.dt_rank + 2 * state, ("mlp", None), "x_proj", use_bias=False)(u)
    dt, b, cc = jnp.split(projected.astype(jnp.float32),
                          [self.dt_rank, self.dt_rank + state], axis=-1)

    def dt_bias_init(key, shape, dtype=jnp.float32):
      """softplus(bias) = dt, log-uniform in [dt_min, dt_max] (floored), as the reference."""
      log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(self.dt_min),
                                  math.log(self.dt_max))
      dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
      return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    dt = dense(c, inner, (None, "mlp"), "dt_proj", dtype=jnp.float32,
               kernel_init=sharding.param(uniform(self.dt_rank ** -0.5), (None, "mlp")),
               bias_init=sharding.param(dt_bias_init, ("mlp",)))(dt)
    a_log = param("a_log", lambda key, shape, dtype: jnp.log(jnp.broadcast_to(
        jnp.arange(1, shape[1] + 1, dtype=dtype), shape)), ("mlp", "state"), (inner, state),
                  jnp.float32)
    d = param("d", nn.initializers.ones, ("mlp",), (inner,), jnp.float32)
    u = u.astype(jnp.float32)
    starts = scan.segment_starts(segment_ids, x.shape[:2])
    y = selective_scan(u, jax.nn.softplus(dt), -jnp.exp(a_log), b, cc, starts, self.chunk_size)
    return y + d * u


@register("attention", "mamba")
class Mamba(TokenMixer):
  """Bidirectional Mamba (see module doc)."""
  state_size: int = 16  # N per inner channel (reference d_state)
  expand: int = 2  # inner width = expand * dim
  conv_size: int = 4  # taps of the depthwise causal convolution (reference d_conv)
  dt_rank: int = 0  # rank of the dt projection; 0 = ceil(dim / 16) (the reference's "auto")
  dt_min: float = 1e-3  # dt initialised log-uniform in [dt_min, dt_max]
  dt_max: float = 1e-1
  chunk_size: int = 256  # positions per associative scan; the state is carried across chunks

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    del positions, deterministic
    self.check_inputs(segment_ids)
    self.check_positive("state_size", "expand", "conv_size", "chunk_size")
    self.check_dt_range()
    if self.dt_rank < 0:
      raise ConfigError(f"model.attention.dt_rank={self.dt_rank} must be >= 0 (0 = "
                        "ceil(dim / 16))")
    c = self.config
    inner = self.expand * c.dim
    xz = dense(c, 2 * inner, ("embed", "mlp"), "in_proj", use_bias=False)(x)
    u, z = zero_padding(xz[..., :inner], mask), xz[..., inner:]
    direction = functools.partial(
        MambaDirection, c, inner, self.state_size, self.conv_size,
        self.dt_rank or math.ceil(c.dim / 16), self.dt_min, self.dt_max, self.chunk_size)

    def flip(t):
      return None if t is None else jnp.flip(t, axis=1)

    forward = direction(name="forward")(u, mask, segment_ids)
    backward = flip(direction(name="backward")(flip(u), flip(mask), flip(segment_ids)))
    y = (forward + backward) * jax.nn.silu(z.astype(jnp.float32))
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.MLP)
    out = dense(c, c.dim, ("mlp", "embed"), "out_proj", use_bias=False)(y)
    return sharding.constrain(out, sharding.HIDDEN)
