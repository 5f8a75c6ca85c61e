"""Property tests of the token mixers (encoders/mixers/): FNet against numpy's FFT, S4D's FFT
convolution and S5 against their recurrences run step by step, the associative and chunked
scans against sequential loops, bidirectional = forward + reversed, segment resets = each
segment alone, padding that never leaks, packing refused by the FFT mixers, and the optimizer's
SSM learning rate. Shapes are tiny: the whole file runs in well under a minute on 2 cores."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.mixers import mamba, scan, ssm
from encoders.needs import model_needs
from experiments import optim
from tests.conftest import tiny_config

MIXERS = ("fnet", "s4d", "s5", "mamba", "hyena")
OPTIONS = {"s4d": dict(state_size=8), "s5": dict(state_size=8),
           "mamba": dict(state_size=4, chunk_size=4), "hyena": dict(filter_order=8)}
DIM = 8


def build(name: str, dtype: str = "float32", **options):
  """(module, jitted apply(params, x, mask, segment_ids)) of a tiny `name` mixer."""
  config = tiny_config(attention=dict(name=name, **{**OPTIONS.get(name, {}), **options}),
                       dim=DIM, num_heads=2, max_length=16, dtype=dtype)
  module = config.build("attention")
  apply = jax.jit(lambda p, x, mask=None, segment_ids=None: module.apply(
      p, x, mask=mask, segment_ids=segment_ids))
  return module, apply


def init(module, length: int = 12, seed: int = 0):
  x = jnp.zeros((1, length, DIM))
  return nn.unbox(jax.jit(module.init)(jax.random.PRNGKey(seed), x))


def randn(seed: int, *shape) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_fnet_is_the_real_part_of_a_2d_dft_of_the_unpadded_tokens():
  module, apply = build("fnet")
  x = randn(0, 2, 10, DIM)
  mask = np.arange(10)[None] < np.array([[10], [7]])
  expected = np.fft.fft2(np.where(mask[..., None], x, 0.0), axes=(1, 2)).real
  np.testing.assert_allclose(apply({}, x, mask), expected, atol=1e-4)


def recurrence(a_bar, b_bar, c, u, reverse: bool = False) -> np.ndarray:
  """2 Re(C h_t), h_t = a_bar h_{t-1} + b_bar u_t (diagonal a_bar [P], b_bar [P, H], c [H, P]),
  step by step in float64; `reverse` runs right to left."""
  h, y = np.zeros(a_bar.shape, complex), np.zeros(u.shape)
  for t in (reversed if reverse else iter)(range(len(u))):
    h = a_bar * h + b_bar @ u[t]
    y[t] = 2 * (c @ h).real
  return y


@pytest.mark.parametrize("a_init", ["lin", "inv"])
def test_s4d_fft_convolution_equals_its_recurrences_forward_plus_reversed(a_init):
  """The two-sided FFT convolution = the forward recurrence (C of direction 0) plus the
  backward one (C of direction 1) run right to left, for each channel."""
  module, _ = build("s4d", a_init=a_init)
  p = {k: np.asarray(v, np.float64) for k, v in init(module)["params"].items() if k != "out"}
  x = randn(1, 2, 13, DIM)  # 13 lags = 4 x 4 - 3: the split lag padded
  y = ssm.s4d_convolve(jnp.asarray(x), *(jnp.asarray(p[k], jnp.float32)
                                         for k in ("log_dt", "log_a_real", "a_imag", "c")))
  a = -np.exp(p["log_a_real"]) + 1j * p["a_imag"]
  dt = np.exp(p["log_dt"])[:, None]
  a_bar, factor = np.exp(a * dt), (np.exp(a * dt) - 1) / a
  c = p["c"][..., 0] + 1j * p["c"][..., 1]
  for row in range(2):
    for h in range(DIM):  # one single-input single-output SSM per channel
      u = x[row, :, h:h + 1].astype(np.float64)
      expected = sum(recurrence(a_bar[h], factor[h][:, None], c[d, h][None], u, reverse=d == 1)
                     for d in (0, 1))
      np.testing.assert_allclose(y[row, :, h], expected[:, 0], atol=2e-4)


def test_s5_equals_its_recurrences_forward_plus_reversed():
  """The whole S5 mixer against a step-by-step float64 reference built from its parameters."""
  module, apply = build("s5", blocks=2)
  params = init(module)
  p = {k: np.asarray(v, np.float64) for k, v in params["params"].items() if k != "out"}
  x = randn(2, 2, 12, DIM)
  lam = p["lambda_re"] + 1j * p["lambda_im"]
  a_bar = np.exp(lam * np.exp(p["log_dt"]))
  b_bar = ((a_bar - 1) / lam)[:, None] * (p["b_tilde"][..., 0] + 1j * p["b_tilde"][..., 1])
  c_f, c_b = (p[k][..., 0] + 1j * p[k][..., 1] for k in ("c_forward", "c_backward"))
  out = params["params"]["out"]
  for row in range(2):
    u = x[row].astype(np.float64)
    y = recurrence(a_bar, b_bar, c_f, u) + recurrence(a_bar, b_bar, c_b, u, True) + p["d"] * u
    g = np.asarray(jax.nn.gelu(y, approximate=False))
    expected = g / (1 + np.exp(-(g @ np.asarray(out["kernel"]) + np.asarray(out["bias"]))))
    np.testing.assert_allclose(apply(params, x)[row], expected, atol=1e-4)


def test_linear_scan_with_resets_and_initial_state_equals_a_sequential_loop():
  rng = np.random.default_rng(3)
  a = jnp.asarray(rng.uniform(0.5, 1.0, (2, 11, 3)) * np.exp(1j * rng.uniform(0, 3, (2, 11, 3))))
  b = jnp.asarray(rng.normal(size=(2, 11, 3)) + 1j * rng.normal(size=(2, 11, 3)))
  h0 = jnp.asarray(rng.normal(size=(2, 3)) + 0j)
  starts = jnp.asarray(rng.uniform(size=(2, 11)) < 0.3)

  def step(h, inputs):
    a_t, b_t, start = inputs
    h = jnp.where(start[:, None], 0, a_t) * h + b_t
    return h, h

  _, expected = jax.lax.scan(step, h0, (a.swapaxes(0, 1), b.swapaxes(0, 1), starts.T))
  np.testing.assert_allclose(scan.linear_scan(a, b, starts, h0), expected.swapaxes(0, 1),
                             atol=1e-5)


@pytest.mark.parametrize("method", ["associative", "sequential"])
@pytest.mark.parametrize("chunk_size", [4, 64])
def test_selective_scan_chunked_equals_the_sequential_reference(chunk_size, method):
  """Mamba's scan (both methods) in chunks of 4 (3 chunks, the last padded) and in one chunk,
  against selective_scan_ref's loop: h = exp(dt A) h + dt B u, y = C h, reset where a segment
  starts."""
  rng = np.random.default_rng(4)
  batch, n, d, state = 2, 11, 3, 4
  u, b, c = (jnp.asarray(rng.normal(size=s), jnp.float32)
             for s in ((batch, n, d), (batch, n, state), (batch, n, state)))
  dt = jnp.asarray(rng.uniform(0.01, 0.5, (batch, n, d)), jnp.float32)
  a = -jnp.asarray(rng.uniform(0.5, 2.0, (d, state)), jnp.float32)
  starts = jnp.asarray(rng.uniform(size=(batch, n)) < 0.25)

  def step(h, inputs):
    u_t, dt_t, b_t, c_t, start = inputs
    h = jnp.where(start[:, None, None], 0, jnp.exp(dt_t[..., None] * a)) * h + (
        (dt_t * u_t)[..., None] * b_t[:, None])
    return h, jnp.einsum("bdn,bn->bd", h, c_t)

  _, expected = jax.lax.scan(step, jnp.zeros((batch, d, state)),
                             tuple(t.swapaxes(0, 1) for t in (u, dt, b, c, starts)))
  y = mamba.selective_scan(u, dt, a, b, c, starts, chunk_size, method)
  np.testing.assert_allclose(y, expected.swapaxes(0, 1), atol=1e-5)


SWAP_DIRECTIONS = {
    "s4d": lambda p: {**p, "c": p["c"][::-1]},
    "s5": lambda p: {**p, "c_forward": p["c_backward"], "c_backward": p["c_forward"]},
    "mamba": lambda p: {**p, "forward": p["backward"], "backward": p["forward"]},
}


@pytest.mark.parametrize("name", sorted(SWAP_DIRECTIONS))
def test_bidirectional_is_forward_plus_reversed(name):
  """Summed directions: the mixer of the flipped row with the two directions' parameters
  swapped is the flipped output (the backward direction is the forward one on the flipped
  row)."""
  module, apply = build(name)
  params = init(module)
  swapped = {"params": SWAP_DIRECTIONS[name](params["params"])}
  x = randn(5, 2, 12, DIM)
  np.testing.assert_allclose(apply(swapped, x[:, ::-1])[:, ::-1], apply(params, x), atol=1e-5)


@pytest.mark.parametrize("name", ["s5", "mamba"])
def test_packed_segments_reset_like_separate_sequences(name):
  """A row packing 5 and 4 tokens then 3 padded: each segment's outputs are those of the
  segment alone (Mamba: chunks of 4, so resets fall inside chunks and state crosses chunks)."""
  module, apply = build(name)
  params = init(module)
  x = randn(6, 1, 12, DIM)
  segment_ids = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3])
  packed = apply(params, x, segment_ids > 0, segment_ids)
  for part in (slice(0, 5), slice(5, 9)):
    np.testing.assert_allclose(packed[:, part], apply(params, x[:, part]), atol=1e-5)


@pytest.mark.parametrize("name", MIXERS)
def test_padding_does_not_leak(name):
  """Changing padded inputs leaves real outputs unchanged; except FNet (whose DFT depends on the
  padded length), a padded row also equals its real tokens run alone, so the backward
  directions start after the last real token."""
  module, apply = build(name)
  params = init(module)
  x = randn(7, 2, 10, DIM)
  mask = jnp.asarray(np.arange(10)[None] < np.array([[10], [6]]))
  noisy = np.where(np.asarray(mask)[..., None], x, 3.0)
  y = apply(params, x, mask)
  np.testing.assert_allclose(apply(params, noisy, mask)[1, :6], y[1, :6], atol=1e-6)
  np.testing.assert_allclose(apply(params, noisy, mask)[0], y[0], atol=1e-6)
  if name != "fnet":
    np.testing.assert_allclose(apply(params, x[1:, :6])[0], y[1, :6], atol=1e-5)


@pytest.mark.parametrize("name", ["fnet", "s4d", "hyena"])
def test_fft_mixers_refuse_packed_rows_in_one_line(name):
  module, _ = build(name)
  x = jnp.zeros((1, 6, DIM))
  with pytest.raises(ConfigError, match=f"model.attention.name='{name}'") as error:
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x,
                                       segment_ids=jnp.ones((1, 6), jnp.int32)))
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, options, field", [
    ("s4d", dict(state_size=7), "state_size"), ("s4d", dict(a_init="hippo"), "a_init"),
    ("s5", dict(state_size=8, blocks=3), "state_size"), ("mamba", dict(chunk_size=0), "chunk_size"),
    ("mamba", dict(dt_min=0.2), "dt_min"), ("mamba", dict(scan_method="fast"), "scan_method"),
    ("hyena", dict(emb_dim=4), "emb_dim")])
def test_bad_options_are_one_line_errors_naming_the_field(name, options, field):
  module, _ = build(name, **options)
  with pytest.raises(ConfigError, match=f"model.attention.{field}=") as error:
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, DIM))))
  assert "\n" not in str(error.value)


def test_mixers_refuse_positions_that_act_on_attention_scores():
  config = tiny_config(attention=dict(name="s5"), position=dict(name="rope"))
  with pytest.raises(ConfigError, match="model.position.name='rope'"):
    jax.eval_shape(lambda: config.build("attention").init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 6, 32))))


@pytest.mark.parametrize("name", MIXERS)
def test_bfloat16_compute_returns_bfloat16_close_to_float32(name):
  """FFTs and scans run in float32 under bfloat16 compute; only the projections round."""
  module32, apply32 = build(name)
  _, apply16 = build(name, dtype="bfloat16")
  params = init(module32)
  x = randn(8, 2, 10, DIM)
  y16, y32 = apply16(params, x), apply32(params, x)
  assert y16.dtype == jnp.bfloat16
  scale = float(jnp.abs(y32).max())
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=0.05 * scale)


def test_ssm_parameters_learn_at_the_ssm_ratio_without_weight_decay():
  """One AdamW step (|update| = lr for every coordinate at step 1) of a one-layer S5 model: the
  SSM parameters move by lr * lr_ratio with no decay; C, D and kernels by lr (1 -
  weight_decay) (decayed, as the reference); biases by lr."""
  t = ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=0, num_steps=10, schedule="constant", end_lr_fraction=0.0,
      weight_decay=0.5, b1=0.9, b2=0.98, eps=1e-9, grad_clip_norm=0.0))
  model = ModelConfig.from_dict(dict(vocab_size=11, max_length=8, dim=8, num_heads=1,
                                     num_layers=1, mlp_dim=8,
                                     attention=dict(name="s5", lr_rule="ratio")))
  optimizer, _ = optim.make_optimizer(t, model_needs(model))
  plain, _ = optim.make_optimizer(t)
  assert jax.tree.structure(optimizer.init(jnp.ones(2))) == jax.tree.structure(
      plain.init(jnp.ones(2)))  # no new state: other models' checkpoints keep their layout
  params = {"encoder": {"blocks": {"attention": {
      name: jnp.ones(3) for name in ("log_dt", "lambda_re", "b_tilde", "c_forward", "d", "bias",
                                     "kernel")}}}}
  updates, _ = optimizer.update(jax.tree.map(lambda p: -p, params), optimizer.init(params),
                                params)
  expected = {"log_dt": 1e-3, "lambda_re": 1e-3, "b_tilde": 1e-3, "c_forward": 1e-2 * (1 - 0.5),
              "d": 1e-2 * (1 - 0.5), "bias": 1e-2, "kernel": 1e-2 * (1 - 0.5)}
  for name, step in expected.items():
    np.testing.assert_allclose(updates["encoder"]["blocks"]["attention"][name], step, rtol=1e-5,
                               err_msg=name)
  with pytest.raises(ConfigError, match="model.attention.lr_ratio=0.0"):
    model_needs(model.replace(attention=dict(name="s5", lr_rule="ratio", lr_ratio=0.0)))
