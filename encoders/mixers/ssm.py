"""Diagonal linear state space models as token mixers: `s4d` (a convolution kernel per channel)
and `s5` (one multi-input multi-output SSM evaluated by a parallel scan). Both are
bidirectional, discretise x' = A x + B u with a zero-order hold and learn their step sizes.

- `s4d`: Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
  Models". Each channel is a single-input single-output SSM with N/2 complex conjugate pairs
  (state size N); its kernel K_l = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l)) is a
  Vandermonde product, applied as an FFT convolution (encoders/mixers/fftconv.py). A is
  S4D-Lin (-1/2 + i pi n) or S4D-Inv (-1/2 + i N/pi (N/(2n+1) - 1)); B is fixed to 1, C
  complex normal, D a skip term, dt log-uniform in [dt_min, dt_max] per channel. Two kernels
  (one C per direction, A and dt shared, as the S4 reference's bidirectional kernel): the
  forward one is causal, the backward one convolves the flipped sequence. Output: GELU, then a
  GLU projection (the reference's `output_linear`). Padded inputs are zeroed, so the backward
  kernel starts after each row's last real token (zeros contribute nothing to a convolution).
  An FFT convolution over a packed row cannot reset at segment boundaries: no packing.
- `s5`: Smith et al. 2023, "Simplified State Space Layers for Sequence Modeling". x_t =
  Lambda_bar x_{t-1} + B_bar u_t, y_t = 2 Re(C x_t) + D u_t with complex diagonal Lambda
  (P/2 states kept by conjugate symmetry), initialised from the eigenvalues of the normal part
  of HiPPO-LegS (HiPPO-N) in `blocks` blocks, B~ = V^-1 B and C~ = C V, one step size per state;
  evaluated with `jax.lax.associative_scan` (encoders/mixers/scan.py). Bidirectional as the
  reference: a forward and a backward scan share Lambda and B and have their own C, outputs
  summed. Packing is exact: both scans reset their state at segment boundaries. Output: GELU,
  then the reference's half GLU (x * sigmoid(W x)).

The SSM parameters (step sizes, A / Lambda, S5's B) are float32, take no weight decay and learn
at the rate of the mixer's `lr_rule` (`parameter_groups`, collected by encoders/needs.py for
experiments/optim.py): `cap` (min(run's, `ssm_lr`), S4's `lr=min(0.001, args.lr)`; S4D's
default), `absolute` (`ssm_lr`, S5's `ssm_lr_base`; S5's default) or `ratio` (`lr_ratio` x the
run's); C and D
are decayed, as in both references. After the GELU both drop out at `model.dropout_rate` with
one mask per channel for the whole row (`tied_dropout`). The output projections init as the
references': S4D's 1x1 convolution U(+-1/sqrt(channels)) (torch), S5's Dense lecun normal (flax).
The convolutions and scans run in float32 whatever the compute dtype; the output is cast to the
compute dtype.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from encoders import linear, sharding
from encoders.errors import ConfigError
from encoders.mixers import scan
from encoders.mixers.base import TokenMixer, uniform, zero_padding
from encoders.mixers.fftconv import fft_conv
from encoders.needs import ParameterGroup, option_learning_rate
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

A_INITS = ("lin", "inv")


def log_dt_init(dt_min: float, dt_max: float) -> nn.initializers.Initializer:
  """log dt uniform in [log dt_min, log dt_max]."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))

  return init


def zoh(a: jax.Array, dt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Zero-order hold of x' = a x + u for diagonal complex a: (a_bar, input factor) with a_bar =
  exp(a dt) and x_t = a_bar x_{t-1} + (a_bar - 1) / a u_t."""
  a_bar = jnp.exp(a * dt)
  return a_bar, (a_bar - 1.0) / a


def as_complex(pair: jax.Array) -> jax.Array:
  """[..., 2] (real, imaginary) -> complex [...]."""
  return jax.lax.complex(pair[..., 0], pair[..., 1])


def s4d_kernel(log_dt: jax.Array, log_a_real: jax.Array, a_imag: jax.Array, c: jax.Array,
               length: int) -> jax.Array:
  """[directions, channels, length] kernels K_l = 2 Re(sum_n C_n (a_bar_n - 1) / A_n a_bar_n^l)
  of log_dt [channels], log_a_real and a_imag [channels, N/2], c [directions, channels, N/2, 2]
  (the Vandermonde product exp(dt A l)). The lag is split as l = q r_max + r, so a_bar^l =
  exp(dt A r) exp(dt A q r_max) and the sum over n is a batched matmul of two Vandermonde
  factors of about sqrt(length) columns each: O(channels x N x length) multiply-adds as the
  reference, but no [channels, N, length] array and sqrt(length) times fewer complex exps."""
  a = -jnp.exp(log_a_real) + 1j * a_imag
  dt = jnp.exp(log_dt)[:, None]
  _, factor = zoh(a, dt)
  inner = math.isqrt(length - 1) + 1  # r in [0, inner), q in [0, outer)
  outer = -(-length // inner)
  low = jnp.exp((a * dt)[..., None] * jnp.arange(inner))  # [channels, N/2, inner]
  high = jnp.exp((a * dt)[..., None] * (inner * jnp.arange(outer)))  # [channels, N/2, outer]
  weighted = (as_complex(c) * factor)[..., None] * low  # [directions, channels, N/2, inner]
  kernel = jnp.einsum("dhnr,hnq->dhqr", weighted, high).real
  return 2.0 * kernel.reshape(kernel.shape[:2] + (outer * inner,))[..., :length]


def s4d_convolve(x: jax.Array, log_dt: jax.Array, log_a_real: jax.Array, a_imag: jax.Array,
                 c: jax.Array) -> jax.Array:
  """The bidirectional S4D convolution of x [batch, n, channels] (float32, no D term): the
  forward kernel over the past plus the backward kernel over the future, y_i = sum_{j <= i}
  K^f_{i-j} x_j + sum_{j >= i} K^b_{j-i} x_j, as one two-sided FFT convolution."""
  forward, backward = s4d_kernel(log_dt, log_a_real, a_imag, c, x.shape[1])
  lags = jnp.concatenate([jnp.flip(backward[:, 1:], axis=1), forward[:, :1] + backward[:, :1],
                          forward[:, 1:]], axis=1)
  return fft_conv(x, lags)


@register("attention", "s4d")
class S4D(TokenMixer):
  """Bidirectional S4D per channel, D skip, GELU, GLU output projection (see module doc)."""
  state_size: int = 64  # N: N/2 complex conjugate pairs per channel (reference: 64)
  a_init: str = "lin"  # lin (S4D-Lin) | inv (S4D-Inv)
  dt_min: float = 1e-3  # step sizes initialised log-uniform in [dt_min, dt_max]
  dt_max: float = 1e-1
  # The SSM parameters' learning rate (encoders/needs.py): cap (min(run's, ssm_lr): S4's rule,
  # the default) | absolute (ssm_lr: S5's) | ratio (lr_ratio x the run's)
  lr_rule: str = "cap"
  lr_ratio: float = 0.1
  ssm_lr: float = 1e-3
  supports_segments = False

  def check_options(self) -> None:
    self.check_positive("state_size")
    self.check_dt_range()
    if self.state_size % 2:
      raise ConfigError(f"model.attention.state_size={self.state_size} must be even (complex "
                        "conjugate pairs)")
    if self.a_init not in A_INITS:
      raise ConfigError(f"model.attention.a_init={self.a_init!r}; allowed: {', '.join(A_INITS)}")

  def parameter_groups(self) -> tuple[ParameterGroup, ...]:
    """dt and A at the SSM rate without decay; C and D decayed, as the reference's optimizer
    (`register(..., lr)` sets weight_decay 0 on dt and A only)."""
    return (ParameterGroup(("log_dt", "log_a_real", "a_imag"), option_learning_rate(self),
                           decay=False),
            ParameterGroup(("c", "d"), decay=True))

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    del segment_ids  # refused by check_inputs
    c = self.config
    channels, half, n_state = c.dim, self.state_size // 2, self.state_size

    def a_imag_init(key, shape, dtype=jnp.float32):
      del key
      n = jnp.arange(shape[-1], dtype=dtype)
      if self.a_init == "lin":
        return jnp.broadcast_to(math.pi * n, shape)
      return jnp.broadcast_to(n_state / math.pi * (n_state / (2 * n + 1) - 1), shape)

    def param(name, init, axes, shape):
      return self.param(name, sharding.param(init, axes), shape, jnp.float32)

    log_dt = param("log_dt", log_dt_init(self.dt_min, self.dt_max), ("mlp",), (channels,))
    log_a_real = param("log_a_real", nn.initializers.constant(math.log(0.5)), ("mlp", "state"),
                       (channels, half))
    a_imag = param("a_imag", a_imag_init, ("mlp", "state"), (channels, half))
    # C ~ complex standard normal (real and imaginary parts of variance 1/2), one per direction.
    c_param = param("c", nn.initializers.normal(0.5 ** 0.5), (None, "mlp", "state", None),
                    (2, channels, half, 2))
    d = param("d", nn.initializers.normal(1.0), ("mlp",), (channels,))
    u = zero_padding(x.astype(jnp.float32), mask)
    y = s4d_convolve(u, log_dt, log_a_real, a_imag, c_param) + d * u
    y = tied_dropout(c, jax.nn.gelu(y, approximate=False), deterministic)
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.MLP)
    # The reference's output_linear, a 1x1 Conv1d: torch's default init U(+-1/sqrt(channels)).
    bound = channels ** -0.5
    gates = linear.dense(c, 2 * channels, ("mlp", "embed"), "out", init=uniform(bound),
                         bias_init=uniform(bound))(y)
    return gates[..., :channels] * jax.nn.sigmoid(gates[..., channels:])


def tied_dropout(c: ModelConfig, y: jax.Array, deterministic: bool) -> jax.Array:
  """Dropout at `model.dropout_rate` with one mask per (row, channel) shared by every position,
  where both references drop, after the GELU: S4's `DropoutNd` (tie=True) and S5's
  `nn.Dropout(broadcast_dims=[0])` on a [length, channels] sequence."""
  return nn.Dropout(c.dropout_rate, broadcast_dims=(1,))(y, deterministic=deterministic)


def hippo_n(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues [size // 2] and eigenvectors V [size, size // 2] of the normal part of the
  HiPPO-LegS matrix (the half kept under conjugate symmetry), as the S5 reference's
  `make_DPLR_HiPPO`; the real parts are the mean of the diagonal (-1/2)."""
  p = np.sqrt(1 + 2 * np.arange(size))
  hippo = -(np.tril(p[:, None] * p[None, :]) - np.diag(np.arange(size)))
  low_rank = np.sqrt(np.arange(size) + 0.5)
  normal = hippo + low_rank[:, None] * low_rank[None, :]
  imag, vectors = np.linalg.eigh(normal * -1j)
  real = np.mean(np.diagonal(normal))
  return (real + 1j * imag)[:size // 2], vectors[:, :size // 2]


@register("attention", "s5")
class S5(TokenMixer):
  """Bidirectional MIMO S5 with a parallel scan, D skip, GELU, half GLU (see module doc)."""
  state_size: int = 64  # P: P/2 complex states kept by conjugate symmetry
  blocks: int = 1  # J: Lambda initialised as J copies of HiPPO-N of size P/J (block-diagonal V)
  dt_min: float = 1e-3  # step sizes initialised log-uniform in [dt_min, dt_max]
  dt_max: float = 1e-1
  lr_rule: str = "absolute"  # the SSM parameters' learning rate as S4D's; S5's rule by default
  lr_ratio: float = 0.1
  ssm_lr: float = 1e-3

  def check_options(self) -> None:
    self.check_positive("state_size", "blocks")
    self.check_dt_range()
    if self.state_size % (2 * self.blocks):
      raise ConfigError(f"model.attention.state_size={self.state_size} must be a multiple of "
                        f"2 * blocks = {2 * self.blocks} (conjugate pairs in every block)")

  def parameter_groups(self) -> tuple[ParameterGroup, ...]:
    """Lambda, B and the step sizes at the SSM rate without decay (the reference's "ssm"
    group, plain Adam); C and D decayed (its "regular" AdamW group)."""
    return (ParameterGroup(("lambda_re", "lambda_im", "b_tilde", "log_dt"),
                           option_learning_rate(self), decay=False),
            ParameterGroup(("c_forward", "c_backward", "d"), decay=True))

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    c = self.config
    channels, full, half = c.dim, self.state_size, self.state_size // 2
    eigenvalues, vectors = hippo_n(full // self.blocks)
    eigenvalues = np.tile(eigenvalues, self.blocks)
    v = np.kron(np.eye(self.blocks), vectors)  # block-diagonal [P, P/2]

    def b_init(key, shape, dtype=jnp.float32):  # B~ = V^-1 B, B lecun normal [P, channels]
      b = v.conj().T @ nn.initializers.lecun_normal()(key, (full, shape[1]), jnp.float32)
      return jnp.stack([b.real, b.imag], axis=-1).astype(dtype)

    def c_init(key, shape, dtype=jnp.float32):  # C~ = C V, C complex lecun normal per row
      c_real = nn.initializers.lecun_normal(batch_axis=(0,))(key, (shape[0], full, 2))
      cv = as_complex(c_real) @ v
      return jnp.stack([cv.real, cv.imag], axis=-1).astype(dtype)

    def param(name, init, axes, shape):
      return self.param(name, sharding.param(init, axes), shape, jnp.float32)

    lambda_re = param("lambda_re", lambda *_: jnp.asarray(eigenvalues.real, jnp.float32),
                      ("state",), (half,))
    lambda_im = param("lambda_im", lambda *_: jnp.asarray(eigenvalues.imag, jnp.float32),
                      ("state",), (half,))
    b_tilde = param("b_tilde", b_init, ("state", "embed", None), (half, channels, 2))
    c_forward = param("c_forward", c_init, ("mlp", "state", None), (channels, half, 2))
    c_backward = param("c_backward", c_init, ("mlp", "state", None), (channels, half, 2))
    d = param("d", nn.initializers.normal(1.0), ("mlp",), (channels,))
    log_dt = param("log_dt", log_dt_init(self.dt_min, self.dt_max), ("state",), (half,))

    a_bar, factor = zoh(jax.lax.complex(lambda_re, lambda_im), jnp.exp(log_dt))
    u = zero_padding(x.astype(jnp.float32), mask)
    bu = jnp.einsum("bnh,ph->bnp", u, factor[:, None] * as_complex(b_tilde))
    shape = x.shape[:2]
    forward = scan.linear_scan(a_bar, bu, scan.segment_starts(segment_ids, shape))
    flipped = None if segment_ids is None else jnp.flip(segment_ids, axis=1)
    backward = jnp.flip(scan.linear_scan(a_bar, jnp.flip(bu, axis=1),
                                         scan.segment_starts(flipped, shape)), axis=1)
    y = 2.0 * (jnp.einsum("bnp,hp->bnh", forward, as_complex(c_forward)) +
               jnp.einsum("bnp,hp->bnh", backward, as_complex(c_backward))).real + d * u
    y = tied_dropout(c, jax.nn.gelu(y, approximate=False), deterministic)
    y = sharding.constrain(y.astype(c.compute_dtype), sharding.MLP)
    # The reference's half GLU `out2`, a flax nn.Dense: lecun_normal kernel, zero bias.
    gate = linear.dense(c, channels, ("mlp", "embed"), "out",
                        init=nn.initializers.lecun_normal())(y)
    return y * jax.nn.sigmoid(gate)
