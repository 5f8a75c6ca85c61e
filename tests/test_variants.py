"""One property test per registered variant (beyond the shared contract tests)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.attention.dense import DenseAttention
from encoders.connections import Residual
from encoders.errors import ConfigError
from encoders.ffn import GLU, MLP
from encoders.heads import ClassificationHead, MLMHead
from encoders.model import Encoder
from encoders.norms import LayerNorm, RMSNorm
from encoders.position import LearnedPosition, RotaryPosition, SinusoidalPosition
from tests.conftest import tiny_config

RNG = np.random.default_rng(0)


def randn(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def init_apply(module, *args, **kwargs):
  params = module.init(jax.random.PRNGKey(0), *args, **kwargs)
  return module.apply(params, *args, **kwargs), nn.unbox(params)["params"]


def test_dense_matches_naive_softmax_with_padding_and_segments():
  c = tiny_config()
  q, k, v = randn(2, 6, 4, 8), randn(2, 6, 4, 8), randn(2, 6, 4, 8)
  mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2], bool)
  segments = jnp.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]])
  out = DenseAttention(c).attend(q, k, v, mask=mask, segment_ids=segments, deterministic=True)
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  allowed = (np.asarray(mask)[:, None, None, :] &
             (np.asarray(segments)[:, None, :, None] == np.asarray(segments)[:, None, None, :]))
  scores = np.where(allowed, scores, -1e30)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bhqk,bkhd->bqhd", weights, v)
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(out)[real], expected[real], atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
  rope = RotaryPosition(tiny_config())
  q, k = randn(1, 1, 1, 8), randn(1, 1, 1, 8)

  def score(i, j):
    qr = rope.rotate(q, jnp.array([[i]]))
    kr = rope.rotate(k, jnp.array([[j]]))
    return float(jnp.sum(qr * kr))

  assert np.isclose(score(3, 1), score(10, 8), atol=1e-5)
  assert np.isclose(score(0, 0), float(jnp.sum(q * k)), atol=1e-5)
  assert not np.isclose(score(3, 1), score(1, 3), atol=1e-3)


def test_sinusoidal_matches_formula():
  c = tiny_config()
  x = jnp.zeros((1, 5, c.dim))
  out = SinusoidalPosition(c).apply({}, x, jnp.arange(5)[None])
  half = c.dim // 2
  inv = np.exp(-np.log(10_000.0) * np.arange(half) / (half - 1))
  np.testing.assert_allclose(out[0, :, :half], np.sin(np.arange(5)[:, None] * inv), atol=1e-6)
  np.testing.assert_allclose(out[0, :, half:], np.cos(np.arange(5)[:, None] * inv), atol=1e-6)


def test_learned_position_adds_table_rows():
  c = tiny_config()
  x = randn(1, 4, c.dim)
  positions = jnp.array([[3, 0, 1, 3]])
  out, params = init_apply(LearnedPosition(c), x, positions)
  np.testing.assert_allclose(out - x, params["embedding"][np.array([3, 0, 1, 3])][None],
                             atol=1e-6)


def test_layernorm_and_rmsnorm_match_numpy():
  c = tiny_config()
  x = np.asarray(randn(3, c.dim)) * 3 + 1
  ln, _ = init_apply(LayerNorm(c), jnp.asarray(x))
  expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(ln, expected, atol=1e-4)
  rms, _ = init_apply(RMSNorm(c), jnp.asarray(x))
  np.testing.assert_allclose(rms, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6),
                             atol=1e-4)


def test_mlp_and_glu_match_manual_computation():
  c = tiny_config()
  x = randn(2, 3, c.dim)
  (y, aux), p = init_apply(MLP(c, activation="relu"), x)
  h = np.maximum(x @ p["wi"]["kernel"] + p["wi"]["bias"], 0)
  np.testing.assert_allclose(y, h @ p["wo"]["kernel"] + p["wo"]["bias"], atol=1e-5)
  assert aux == {}
  (y, _), p = init_apply(GLU(c, activation="silu"), x)
  gate = jax.nn.silu(x @ p["wi_gate"]["kernel"] + p["wi_gate"]["bias"])
  up = x @ p["wi_up"]["kernel"] + p["wi_up"]["bias"]
  np.testing.assert_allclose(y, (gate * up) @ p["wo"]["kernel"] + p["wo"]["bias"], atol=1e-5)


def test_residual_passes_last_output_and_scan_equals_loop():
  history = [randn(1, 2, 3), randn(1, 2, 3)]
  assert Residual(tiny_config()).apply({}, history) is history[-1]
  tokens = jnp.asarray(RNG.integers(4, 37, (2, 10)), jnp.int32)
  scanned = Encoder(tiny_config(scan_layers=True))
  looped = Encoder(tiny_config(scan_layers=False))
  params = scanned.init(jax.random.PRNGKey(0), tokens)["params"]
  # Unstack the scanned [layers, ...] parameters into blocks_0, blocks_1.
  loop_params = {k: v for k, v in params.items() if k != "blocks"}
  for i in range(2):
    loop_params[f"blocks_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["blocks"])
  a, _ = scanned.apply({"params": params}, tokens)
  b, _ = looped.apply({"params": nn.unbox(loop_params)}, tokens)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_tied_mlm_head_uses_the_embedding_table():
  c = tiny_config()
  h, table = randn(1, 3, c.dim), randn(c.vocab_size, c.dim)
  head = MLMHead(c)
  params = head.init(jax.random.PRNGKey(0), h, inputs={}, embedding=table)
  logits = head.apply(params, h, inputs={}, embedding=table)
  other = head.apply(params, h, inputs={}, embedding=table * 2)
  assert not np.allclose(logits, other)
  assert "decoder" not in params["params"]


def test_mean_pooling_ignores_padding():
  c = tiny_config()
  head = ClassificationHead(c, num_classes=3, pooling="mean")
  h = randn(1, 5, c.dim)
  mask = jnp.array([[1, 1, 1, 0, 0]], bool)
  params = head.init(jax.random.PRNGKey(0), h, inputs={"mask": mask})
  a = head.apply(params, h, inputs={"mask": mask})
  b = head.apply(params, h.at[:, 3:].set(100.0), inputs={"mask": mask})
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_mlm_head_on_predict_positions_equals_the_full_logits_gathered():
  c = tiny_config()
  h, table = randn(2, 6, c.dim), randn(c.vocab_size, c.dim)
  positions = jnp.array([[0, 4, 5], [2, 2, 1]])
  head = MLMHead(c)
  params = head.init(jax.random.PRNGKey(0), h, inputs={}, embedding=table)
  full = head.apply(params, h, inputs={}, embedding=table)
  some = head.apply(params, h, inputs={"predict_positions": positions}, embedding=table)
  assert some.shape == (2, 3, c.vocab_size)
  np.testing.assert_allclose(some, jnp.take_along_axis(full, positions[..., None], 1), atol=1e-5)


@pytest.mark.parametrize("module_class", [LearnedPosition, SinusoidalPosition])
def test_absolute_positions_refuse_inputs_longer_than_max_length(module_class):
  c = tiny_config(max_length=8)
  with pytest.raises(ConfigError, match="input length 9 exceeds model.max_length=8"):
    module_class(c).init(jax.random.PRNGKey(0), jnp.zeros((1, 9, c.dim)), jnp.arange(9)[None])
