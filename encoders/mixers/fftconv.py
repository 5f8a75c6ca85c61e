"""Non-causal long convolutions by FFT, shared by S4D and Hyena.

`fft_conv(x, kernel)` computes y_i = sum_j k_{i-j} x_j over one row for a two-sided kernel given
at the lags -(n-1) .. n-1: both sequences are zero-padded to 2n, so the circular convolution of
the FFT is the linear one (no wrap-around), in O(n log n) (as the S4 and Hyena references,
which pad to 2n). A causal kernel is the special case k_{<0} = 0. Computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fft_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [batch, n, channels], kernel [channels, 2n - 1] at lags -(n-1) .. n-1 -> y [batch, n,
  channels] float32, y_i = sum_j kernel[i - j] x_j."""
  n = x.shape[1]
  kernel = kernel.astype(jnp.float32)
  # Circular layout of size 2n: lags 0 .. n-1 first, an unused zero slot, lags -(n-1) .. -1.
  circular = jnp.concatenate([kernel[:, n - 1:], jnp.zeros_like(kernel[:, :1]),
                              kernel[:, :n - 1]], axis=1)
  spectrum = jnp.fft.rfft(x.astype(jnp.float32), n=2 * n, axis=1)
  y = jnp.fft.irfft(spectrum * jnp.fft.rfft(circular, axis=1).T[None], n=2 * n, axis=1)
  return y[:, :n]
