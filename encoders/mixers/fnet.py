"""`fnet`: the real part of a 2-D discrete Fourier transform over the length and hidden
dimensions, no parameters (Lee-Thorp et al. 2022, "FNet: Mixing Tokens with Fourier
Transforms").

Padded positions are zeroed before the transform, so changing padded tokens leaves the real
outputs unchanged; the outputs still depend on the padded length (the DFT over n positions has
n frequencies), so the same sequence padded to another length gives other (equally valid)
outputs. The DFT mixes the whole row: packed rows (`segment_ids`) are a one-line error. The
transform runs in float32; the output is cast to the compute dtype. As in the paper the DFT is
not normalised, so outputs grow like sqrt(length * dim); the paper's blocks are post-norm
(`model.norm_position=post`), which renormalises the residual stream after every mixer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from encoders.mixers.base import TokenMixer, zero_padding
from encoders.registry import register


@register("attention", "fnet")
class FNet(TokenMixer):
  """y = Re(DFT_length(DFT_hidden(x)))."""
  supports_segments = False

  def mix(self, x: jax.Array, *, mask: jax.Array | None, segment_ids: jax.Array | None,
          deterministic: bool) -> jax.Array:
    del segment_ids, deterministic  # segments refused by check_inputs
    return jnp.fft.fft2(zero_padding(x.astype(jnp.float32), mask), axes=(1, 2)).real
