"""Cross-layer connections: what flows between blocks, and (hyper-connections) inside them.

The Encoder keeps a `history`: the embedding output followed by the output of every block so
far. Connection `depth` (set by the Encoder) builds block `depth - 1`'s input from the first
`depth` entries, `connection(history) -> x`; the one with `depth = num_layers + 1` builds the
encoder output (before the final norm). Inside a block each sub-layer (attention, FFN) joins
the stream residually, with norms placed by `model.norm_position` (pre / post / sandwich);
only hyper-connections replace that join (`wraps_sublayers`).

What a connection reads decides how the Encoder runs the blocks (`reads`):
- "last": every connection reads only the latest output (residual, hyper). Identical blocks
  run under `nn.scan` (compile time independent of depth); history then holds only the last
  entry, and only the input (depth 1) and output connections are built.
- "all_at_output": blocks see the plain residual stream, the output reads every layer
  (scalar_mix). Still scanned: block outputs are collected as scan outputs.
- "all": every block input reads earlier outputs (denseformer, densenet): a Python loop over
  blocks; compile time grows with depth.

Intermediate outputs: `Encoder(..., return_all_layers=True)` also returns the stacked history
[num_layers + 1, batch, length, dim] (embedding output, then each block's raw output, before
the final norm; hyper streams summed). They are collected only when asked for.

Variants (each starts as, or next to, the residual model):
- `residual`: He et al. 2016 / Vaswani et al. 2017: the next input is the last output.
- `denseformer`: Pagliardini et al. 2024, "DenseFormer: Enhancing Information Flow in
  Transformers via Depth Weighted Averaging". After block i a Depth-Weighted Average over the
  embedding and block outputs j <= i with j = i (mod `dilation`), only every `period` blocks
  (the paper's k x p DenseFormer); i // dilation + 1 weights each, initialised to 1 on the
  current output and 0 elsewhere, so step 0 equals the residual model. Parameters: sum of
  (i // dilation + 1) over i = 1..L with period | i, i.e. L(L+3)/2 for k = p = 1.
- `scalar_mix`: ELMo (Peters et al. 2018) / BERMo scalar mix: the output is
  gamma * sum_j softmax(s)_j h_j over the embedding and all L block outputs (L + 2
  parameters). s starts at 0 (ELMo: uniform weights). A "start at the last layer" option is
  left out on purpose: softmax cannot be exactly one-hot, and a large logit gap saturates the
  softmax so the other layers get almost no gradient. With a final norm (pre/sandwich) gamma
  only matters through the norm's epsilon; it matters with `post`.
- `densenet`: Huang et al. 2017, "Densely Connected Convolutional Networks": the input of
  block i >= 1 (and the output, i = L) is the concatenation of the last
  k = min(i + 1, `max_inputs`) history entries (0 = all) projected back to the width: a
  d x (k * d) kernel, no bias; block 0 reads the embedding as is. In all
  d^2 * sum_{t=2}^{L+1} min(t, max_inputs) parameters (d^2 * L(L+3)/2 with full history:
  more than the blocks' ~12 L d^2 once L > 21). The projection starts as identity on the
  latest output and zero on the rest (the residual model); the skip blocks get gradients from
  step 0 and open with training. It is named `projection`, not `kernel`, so AdamW does not
  decay it (experiments/optim.py): like a norm scale's 1, its identity is no value to pull
  towards 0.
  Activations: all L block outputs are kept, O(L * length * d) per sequence (O(k * length * d)
  live at inference under jit; training stores them for backprop as the residual model does);
  the projection runs as a sum of k matmuls, so no [length, k * d] concatenation is stored.
- `hyper`: Zhu et al. 2024, "Hyper-Connections": n = `expansion_rate` residual streams
  [batch, length, n, dim]. The input connection copies the embedding into n streams, the
  output connection sums them. Around every sub-layer (as in the paper, not per block):
  width connection h_in = A_m^T H, residual mix A_r^T H, depth connection
  H' = beta (x) f(h_in) + A_r^T H. Static init (paper eq. 14): beta = 1, A_m = e_(k mod n)
  with k the sub-layer's index (2 * layer + {0: attention, 1: ffn}), A_r = I, so n = 1 is
  exactly the pre-norm residual model, and for any n all streams stay equal at step 0 (the
  output is n x the residual stream, which the final norm undoes up to its epsilon).
  `dynamic` adds the paper's input-dependent part: tanh(norm(H) W) scaled by s (W = 0,
  s = 0.01 at init; s gets no gradient until W has moved). As in the paper, W is weight-decayed
  (a `kernel`) and the static matrices are not. Pre/sandwich norm only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.errors import ConfigError
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

STREAMS = ("act_batch", "act_length", None, "act_embed")  # hyper-connection streams axis


def _at_least(value: int, low: int, option: str) -> None:
  if not isinstance(value, int) or value < low:
    raise ConfigError(f"model.connection.{option}={value!r} must be an integer >= {low}")


class Connection(nn.Module):
  """Base of every connection: fields, how it reads history, and its defaults."""
  config: ModelConfig
  depth: int = 0  # entries the full history holds when called (set by the Encoder)
  set_by_model = ("depth",)  # not a config option (registry.constructor_fields)
  reads = "last"  # "last" | "all_at_output" | "all" (see the module docstring)
  wraps_sublayers = False  # True: Block calls `join` around each sub-layer

  def __post_init__(self):
    self.check()
    super().__post_init__()

  def check(self) -> None:
    """Raises a one-line ConfigError for bad option values."""

  def readout(self, y: jax.Array) -> jax.Array:
    """A block output as carried in history -> [batch, length, dim]."""
    return y

  def _mix(self, weights: jax.Array, inputs: Sequence[jax.Array]) -> jax.Array:
    """sum_j weights[j] * inputs[j], accumulated in float32."""
    total = sum(weights[j] * x.astype(jnp.float32) for j, x in enumerate(inputs))
    return total.astype(self.config.compute_dtype)


@register("connection", "residual")
class Residual(Connection):
  """The residual stream: the next input is the last output."""

  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    return history[-1]


@register("connection", "denseformer")
class DenseFormer(Connection):
  """Depth-Weighted Average after every `period`-th block over every `dilation`-th output."""
  dilation: int = 1
  period: int = 1
  reads = "all"

  def check(self):
    _at_least(self.dilation, 1, "dilation")
    _at_least(self.period, 1, "period")

  @nn.compact
  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    i = self.depth - 1  # blocks run so far
    if i == 0 or i % self.period:
      return history[-1]
    inputs = history[i % self.dilation::self.dilation]  # outputs j <= i, j = i (mod dilation)

    def init(rng, shape, dtype):  # 1 on the current output, 0 on the others
      return jnp.zeros(shape, dtype).at[-1].set(1.0)

    weights = self.param("weights", sharding.param(init, (None,)), (len(inputs),),
                         jnp.float32)
    return self._mix(weights, inputs)


@register("connection", "scalar_mix")
class ScalarMix(Connection):
  """ELMo / BERMo: the output is gamma * softmax-weighted sum of all layers' outputs."""
  reads = "all_at_output"

  @nn.compact
  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    if self.depth <= self.config.num_layers:
      return history[-1]
    logits = self.param("weights", sharding.param(nn.initializers.zeros, (None,)),
                        (len(history),), jnp.float32)
    gamma = self.param("gamma", sharding.param(nn.initializers.ones, ()), (), jnp.float32)
    return self._mix(gamma * jax.nn.softmax(logits), history)


@register("connection", "densenet")
class DenseNet(Connection):
  """Concatenation of the last `max_inputs` outputs (0 = all), projected back to `dim`."""
  max_inputs: int = 0
  reads = "all"

  def check(self):
    _at_least(self.max_inputs, 0, "max_inputs")

  @nn.compact
  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    if self.depth == 1:
      return history[0]
    c = self.config
    k = min(self.depth, self.max_inputs or self.depth)

    def init(rng, shape, dtype):  # identity on the latest output, zero on the others
      return jnp.zeros(shape, dtype).at[-1].set(jnp.eye(c.dim, dtype=dtype))

    kernel = self.param("projection", sharding.param(init, (None, "embed", None)),
                        (k, c.dim, c.dim), c.params_dtype)
    # concat(inputs) @ kernel.reshape(k * dim, dim) as a sum of k products, so that no
    # concatenated copy is materialised (and stored for backprop) per connection.
    y = sum(jnp.einsum("bld,de->ble", x.astype(c.compute_dtype), kernel[j].astype(c.compute_dtype))
            for j, x in enumerate(history[-k:]))
    return sharding.constrain(y, sharding.HIDDEN)


@register("connection", "hyper")
class HyperConnections(Connection):
  """n residual streams with learned depth (beta) and width (A_m, A_r) connections."""
  expansion_rate: int = 4
  dynamic: bool = False
  wraps_sublayers = True

  def check(self):
    _at_least(self.expansion_rate, 1, "expansion_rate")
    if self.config.norm_position == "post":
      raise ConfigError("model.connection.name='hyper' needs model.norm_position pre or "
                        "sandwich (hyper-connections replace the residual add; got 'post')")

  def readout(self, y: jax.Array) -> jax.Array:
    return y.sum(axis=-2)

  def __call__(self, history: Sequence[jax.Array]) -> jax.Array:
    if self.depth == 1:  # embedding -> n identical streams
      x = history[0]
      streams = jnp.broadcast_to(x[..., None, :], (*x.shape[:-1], self.expansion_rate,
                                                    x.shape[-1]))
      return sharding.constrain(streams, STREAMS)
    if self.depth == self.config.num_layers + 1:
      return self.readout(history[-1])
    return history[-1]

  @nn.compact
  def join(self, streams: jax.Array, branch: Callable, index) -> tuple[jax.Array, dict]:
    """One sub-layer `branch(h) -> (y, aux)` on streams [batch, length, n, dim].

    `index` (an int, or traced under nn.scan) picks A_m's initial stream, k mod n.
    """
    c, n = self.config, self.expansion_rate

    def alpha_init(rng, shape, dtype):  # [A_m | A_r] = [e_(k mod n) | I]
      return jnp.concatenate([jax.nn.one_hot(index % n, n, dtype=dtype)[:, None],
                              jnp.eye(n, dtype=dtype)], axis=1)

    alpha = self.param("static_alpha", sharding.param(alpha_init, (None, None)), (n, n + 1),
                       jnp.float32)
    beta = self.param("static_beta", sharding.param(nn.initializers.ones, (None,)), (n,),
                      jnp.float32)
    if self.dynamic:
      normed = c.build("norm", name="norm")(streams)

      def dynamic(name: str, features: int) -> jax.Array:
        scale = self.param(f"{name}_scale", sharding.param(nn.initializers.constant(0.01), ()),
                           (), jnp.float32)
        w = nn.Dense(features, use_bias=False, dtype=c.compute_dtype, param_dtype=c.params_dtype,
                     kernel_init=sharding.param(nn.initializers.zeros, ("embed", None)),
                     name=f"dynamic_{name}")(normed)
        return scale * jnp.tanh(w.astype(jnp.float32))

      alpha = alpha + dynamic("alpha", n + 1)  # [batch, length, n, n + 1]
      beta = beta + dynamic("beta", 1)[..., 0]  # [batch, length, n]
    alpha = alpha.astype(c.compute_dtype)  # two einsums: 1.5x faster than slicing one on CPU
    y, aux = branch(jnp.einsum("...n,...nd->...d", alpha[..., 0], streams))
    residual = jnp.einsum("...nm,...nd->...md", alpha[..., 1:], streams)
    out = beta.astype(c.compute_dtype)[..., None] * y[..., None, :] + residual
    return sharding.constrain(out, STREAMS), aux
