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

The selective scan (`selective_scan`) runs within chunks of `chunk_size` positions, with a
`lax.scan` carrying the state across chunks, so memory stays O(batch x chunk x d_inner x state)
per chunk (encoders/mixers/scan.py). Within a chunk, `scan_method` picks an associative scan
(parallel over positions: GPU, TPU) or a sequential loop (CPU, where it was 3-5x faster); `auto`
picks by backend. The two directions run as one scan, stacked along the batch. Packing is exact:
the scan resets its state at segment boundaries and the convolution taps that would read another
segment are zeroed, in both directions. Padded positions are zeroed before the convolution and
after it, so no state reads them and the backward scan starts at each row's last real token. The
scan runs in float32; A_log and D are float32 and, as in the reference, take no weight decay
(the convolution's taps do). The projections init as the reference's torch nn.Linear,
U(+-1/sqrt(fan_in)), the output projection's divided by sqrt(num_layers) (its `_init_weights`).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import linear, sharding, target
from encoders.errors import ConfigError
from encoders.mixers import scan
from encoders.mixers.base import TokenMixer, uniform, zero_padding
from encoders.needs import ParameterGroup
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

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
                   starts: jax.Array, chunk_size: int, method: str = "associative") -> jax.Array:
  """y_t = C_t . h_t, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t (h reset where `starts`), for u
  and dt [batch, n, channels], A [channels, state] or one per row [batch, channels, state], B
  and C [batch, n, state], starts [batch, n] bool; float32, chunked (see module doc). (The
  reference's `selective_scan_ref` without D.) `method`: within a chunk, an `associative` scan
  over all positions at once, or a `sequential` loop that keeps only the running state and
  forms each step's exp(dt A) and C . h inside the step (less memory traffic; on a CPU it
  ran 3-5x faster, see docs/benchmarks.md)."""
  a = a if a.ndim == 3 else jnp.broadcast_to(a, (u.shape[0],) + a.shape)

  def associative(h, inputs):
    u, dt, b, c, starts = inputs
    decay = jnp.exp(dt[..., None] * a[:, None])  # [batch, chunk, channels, state]
    drive = (dt * u)[..., None] * b[:, :, None, :]
    states = scan.linear_scan(decay, drive, starts, h)
    return states[:, -1], jnp.einsum("bsdn,bsn->bsd", states, c)

  def sequential(h, inputs):
    def step(h, inputs):
      u, dt, b, c, start = inputs  # one position: [batch, channels], ..., [batch]
      decay = jnp.where(start[:, None, None], 0, jnp.exp(dt[..., None] * a))
      h = decay * h + (dt * u)[..., None] * b[:, None, :]
      return h, jnp.einsum("bdn,bn->bd", h, c)

    h, y = jax.lax.scan(step, h, jax.tree.map(lambda t: jnp.swapaxes(t, 0, 1), inputs))
    return h, jnp.swapaxes(y, 0, 1)

  chunk = dict(associative=associative, sequential=sequential)[method]
  h0 = jnp.zeros(a.shape, jnp.float32)
  return scan.chunked_scan(chunk, (u, dt, b, c, starts), h0, chunk_size)


class MambaDirection(nn.Module):
  """One direction's selective SSM inputs, left to right: causal conv, SiLU, dt/B/C
  projections. Takes x [batch, n, inner] (padded positions zero) -> (u, dt, A, B, C, D), the
  float32 inputs of `selective_scan` (A [batch, inner, state], D [batch, 1, inner]); the
  parent runs both directions' scans as one."""
  config: ModelConfig
  inner: int
  state_size: int
  conv_size: int
  dt_rank: int
  dt_min: float
  dt_max: float

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None,
               segment_ids: jax.Array | None) -> tuple[jax.Array, ...]:
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
    projected = linear.dense(c, self.dt_rank + 2 * state, ("mlp", None), "x_proj",
                             use_bias=False, init=uniform(inner ** -0.5))(u)
    dt, b, cc = jnp.split(projected.astype(jnp.float32),
                          [self.dt_rank, self.dt_rank + state], axis=-1)

    def dt_bias_init(key, shape, dtype=jnp.float32):
      """softplus(bias) = dt, log-uniform in [dt_min, dt_max] (floored), as the reference."""
      log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(self.dt_min),
                                  math.log(self.dt_max))
      dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
      return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    dt = linear.dense(c, inner, (None, "mlp"), "dt_proj", dtype=jnp.float32,
                      init=uniform(self.dt_rank ** -0.5), bias_init=dt_bias_init)(dt)
    a_log = param("a_log", lambda key, shape, dtype: jnp.log(jnp.broadcast_to(
        jnp.arange(1, shape[1] + 1, dtype=dtype), shape)), ("mlp", "state"), (inner, state),
                  jnp.float32)
    d = param("d", nn.initializers.ones, ("mlp",), (inner,), jnp.float32)
    rows = x.shape[:1]  # A and D repeated per row, so directions stack along the batch
    return (u.astype(jnp.float32), jax.nn.softplus(dt),
            jnp.broadcast_to(-jnp.exp(a_log), rows + a_log.shape), b, cc,
            jnp.broadcast_to(d, rows + (1, inner)))


SCAN_METHODS = ("auto", "associative", "sequential")


@register("attention", "mamba")
class Mamba(TokenMixer):
  """Bidirectional Mamba (see module doc)."""
  state_size: int = 16  # N per inner channel (reference d_state)
  expand: int = 2  # inner width = expand * dim
  conv_size: int = 4  # taps of the depthwise causal convolution (reference d_conv)
  dt_rank: int = 0  # rank of the dt projection; 0 = ceil(dim / 16) (the reference's "auto")
  dt_min: float = 1e-3  # dt initialised log-uniform in [dt_min, dt_max]
  dt_max: float = 1e-1
  chunk_size: int = 256  # positions per scanned chunk; the state is carried across chunks
  # how a chunk is scanned (`selective_scan`): auto = sequential on CPU, associative elsewhere
  scan_method: str = "auto"

  def resolved_scan_method(self) -> str:
    if self.scan_method not in SCAN_METHODS:
      raise ConfigError(f"model.attention.scan_method={self.scan_method!r}; allowed: "
                        f"{', '.join(SCAN_METHODS)}")
    chosen = self.scan_method
    if chosen == "auto":
      chosen = "sequential" if target.platform() == "cpu" else "associative"
    target.note("scan", self, self.scan_method, chosen)
    return chosen

  def check_options(self) -> None:
    self.check_positive("state_size", "expand", "conv_size", "chunk_size")
    self.check_dt_range()
    if self.dt_rank < 0:
      raise ConfigError(f"model.attention.dt_rank={self.dt_rank} must be >= 0 (0 = "
                        "ceil(dim / 16))")

  def parameter_groups(self) -> tuple[ParameterGroup, ...]:
    """A_log and D undecayed (the reference's `_no_weight_decay`), the convolution's taps
    decayed (an ordinary weight there); every parameter at the run's rate."""
    return (ParameterGroup(("*/a_log", "*/d"), decay=False),
            ParameterGroup(("*/conv_kernel",), decay=True))

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    del deterministic
    method = self.resolved_scan_method()
    c = self.config
    inner = self.expand * c.dim
    # torch nn.Linear's default init U(+-1/sqrt(fan_in)), as the reference (no biases).
    xz = linear.dense(c, 2 * inner, ("embed", "mlp"), "in_proj", use_bias=False,
                      init=uniform(c.dim ** -0.5))(x)
    u, z = zero_padding(xz[..., :inner], mask), xz[..., inner:]
    direction = functools.partial(
        MambaDirection, c, inner, self.state_size, self.conv_size,
        self.dt_rank or math.ceil(c.dim / 16), self.dt_min, self.dt_max)

    def flip(t):
      return None if t is None else jnp.flip(t, axis=1)

    # Both directions in one scan, stacked along the batch (one loop, twice the work per step).
    batch, n = x.shape[:2]
    forward = direction(name="forward")(u, mask, segment_ids)
    backward = direction(name="backward")(flip(u), flip(mask), flip(segment_ids))
    u, dt, a, b, cc, d = (jnp.concatenate(pair) for pair in zip(forward, backward, strict=True))
    starts = jnp.concatenate([scan.segment_starts(ids, (batch, n))
                              for ids in (segment_ids, flip(segment_ids))])
    y = selective_scan(u, dt, a, b, cc, starts, self.chunk_size, method) + d * u
    y = (y[:batch] + flip(y[batch:])) * jax.nn.silu(z.astype(jnp.float32))
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.MLP)
    # Rescaled by 1 / sqrt(num_layers), the reference's `_init_weights` (rescale_prenorm_residual,
    # one residual per layer as in Caduceus, whose blocks have no MLP).
    return linear.dense(c, c.dim, ("mlp", "embed"), "out_proj", use_bias=False,
                        init=uniform(inner ** -0.5 / math.sqrt(c.num_layers)))(y)
