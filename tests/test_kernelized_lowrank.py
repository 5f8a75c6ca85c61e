"""Property tests of the kernelized (linear, performer) and low-rank (linformer, nystrom)
attention variants against exact softmax attention and their closed forms."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.attention.kernelized import LinearAttention, PerformerAttention
from encoders.attention.lowrank import LinformerAttention, NystromAttention
from encoders.errors import ConfigError
from experiments.train import train_and_evaluate
from tests.conftest import tiny_config
from tests.test_train import tiny_listops

VARIANTS = {"linear": LinearAttention, "performer": PerformerAttention,
            "linformer": LinformerAttention, "nystrom": NystromAttention}


def randn(seed, *shape, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def qkv(seed, b=2, n=12, h=2, d=8, scale=1.0):
  return tuple(randn(seed + i, b, n, h, d, scale=scale) for i in range(3))


def softmax_attention(q, k, v, allowed=None):
  """Exact softmax attention in numpy; `allowed`: [b, q, k] bool."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if allowed is not None:
    scores = np.where(allowed[:, None], scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  return np.einsum("bhqk,bkhd->bqhd", weights / weights.sum(-1, keepdims=True), v)


def direct(cls, **options):
  """A `cls` module whose call is `attend(q, k, v, ...)` (params created inside `attend` need a
  compact method)."""

  class Direct(cls):
    @nn.compact
    def __call__(self, q, k, v, **kwargs):  # pylint: disable=arguments-differ
      return self.attend(q, k, v, **kwargs)

  return Direct(options.pop("config", None) or tiny_config(), **options)


def attend(module, q, k, v, mask=None, segment_ids=None, params=None, bias=None):
  """Runs `module.attend`, initialising its params (if any) when not given."""
  kwargs = dict(mask=mask, segment_ids=segment_ids, deterministic=True, bias=bias)
  if params is None:
    params = module.init(jax.random.PRNGKey(0), q, k, v, **kwargs)
  return module.apply(params, q, k, v, **kwargs)


def test_performer_error_falls_as_num_features_grows():
  q, k, v = qkv(0, scale=0.5)
  exact = softmax_attention(q, k, v)
  def error(num_features, seed):
    module = direct(PerformerAttention, num_features=num_features, seed=seed)
    return np.abs(attend(module, q, k, v) - exact).mean()

  errors = {m: np.mean([error(m, seed) for seed in range(4)]) for m in (16, 256, 1024)}
  assert errors[16] > 2 * errors[256] and errors[256] > 1.3 * errors[1024], errors
  assert errors[1024] < 0.01, errors


def test_performer_is_deterministic_given_seed():
  q, k, v = qkv(1)
  a, b, c = (attend(direct(PerformerAttention, seed=seed), q, k, v) for seed in (3, 3, 4))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_linear_matches_naive_closed_form_with_padding_and_segments():
  q, k, v = qkv(2)
  mask = np.ones((2, 12), bool)
  mask[1, 9:] = False
  segments = np.array([[0] * 5 + [1] * 7, [4, 4, 9, 9, 9, 4, 7, 7, 7, 7, 7, 7]])
  phi_q, phi_k = (np.where(x > 0, x, np.expm1(np.minimum(x, 0))) + 1.0
                  for x in (np.asarray(q, np.float64), np.asarray(k, np.float64)))
  for seg in (None, segments):
    out = attend(direct(LinearAttention), q, k, v, mask=jnp.asarray(mask),
                 segment_ids=None if seg is None else jnp.asarray(seg))
    sim = np.einsum("bqhm,bkhm->bhqk", phi_q, phi_k)
    allowed = np.broadcast_to(mask[:, None, :], (2, 12, 12))
    if seg is not None:
      allowed = allowed & (seg[:, :, None] == seg[:, None, :])
    sim = np.where(allowed[:, None], sim, 0.0)
    expected = np.einsum("bhqk,bkhd->bqhd", sim / sim.sum(-1, keepdims=True), v)
    np.testing.assert_allclose(np.asarray(out)[mask], expected[mask], atol=1e-5)


def test_kernelized_segment_overflow_is_nan_not_leakage():
  q, k, v = qkv(3, b=1)
  segments = jnp.asarray([[0] * 4 + [1] * 4 + [2] * 4])
  out = np.asarray(attend(direct(LinearAttention, max_segments=2), q, k, v,
                          segment_ids=segments))
  alone = attend(direct(LinearAttention), q[:, 4:8], k[:, 4:8], v[:, 4:8])
  np.testing.assert_allclose(out[:, 4:8], alone, atol=1e-5)
  assert np.isnan(out[:, 8:]).all() and np.isfinite(out[:, :8]).all()


def test_linformer_with_identity_projections_equals_dense():
  n = 10
  q, k, v = qkv(4, n=n)
  module = direct(LinformerAttention, config=tiny_config(max_length=n), k=n)
  params = {"params": {"e": jnp.eye(n), "f": jnp.eye(n)}}
  np.testing.assert_allclose(attend(module, q, k, v, params=params), softmax_attention(q, k, v),
                             atol=1e-5)


def test_linformer_rejects_inputs_longer_than_max_length():
  q, k, v = qkv(5, n=12)
  with pytest.raises(ConfigError, match="model.max_length=8"):
    attend(direct(LinformerAttention, config=tiny_config(max_length=8)), q, k, v)


def test_nystrom_with_one_landmark_per_token_matches_dense():
  """(20 pseudo-inverse iterations: the paper's 6 leave errors near 5e-2 at this conditioning.)"""
  q, k, v = qkv(6, scale=1.5)
  out = attend(direct(NystromAttention, num_landmarks=12, pinv_iterations=20), q, k, v)
  np.testing.assert_allclose(out, softmax_attention(q, k, v), atol=1e-4)


@pytest.mark.slow
def test_nystrom_uneven_segments_are_exact_for_piecewise_constant_inputs():
  """10 tokens, 4 landmarks: segments of sizes 3, 2, 3, 2. When q and k are constant on each
  segment, softmax(Q K~^T) = S softmax(Q~ K~^T) and Nystrom is exact, so this checks the
  landmark assignment and the pseudo-inverse; padding two more tokens changes nothing."""
  sizes = np.array([3, 2, 3, 2])
  q, k = (jnp.repeat(randn(seed, 1, 4, 2, 8), sizes, axis=1) for seed in (7, 8))
  v = randn(9, 1, 10, 2, 8)
  module = direct(NystromAttention, num_landmarks=4, pinv_iterations=20)
  out = attend(module, q, k, v)
  np.testing.assert_allclose(out, softmax_attention(q, k, v), atol=1e-4)
  noise = randn(10, 1, 2, 2, 8, scale=5.0)
  q, k, v = (jnp.concatenate([x, noise], axis=1) for x in (q, k, v))
  padded = attend(module, q, k, v, mask=jnp.asarray([[True] * 10 + [False] * 2]))
  np.testing.assert_allclose(padded[:, :10], out, atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_padded_keys_contribute_nothing(name):
  q, k, v = qkv(11, b=1)
  mask = jnp.asarray([[True] * 8 + [False] * 4])
  module = direct(VARIANTS[name], **({"num_landmarks": 4} if name == "nystrom" else {}))
  params = module.init(jax.random.PRNGKey(0), q, k, v, mask=mask, segment_ids=None,
                       deterministic=True)
  noisy = [t.at[:, 8:].set(randn(12 + i, 1, 4, 2, 8, scale=30.0)) for i, t in enumerate((q, k, v))]
  a = attend(module, q, k, v, mask=mask, params=params)
  b = attend(module, *noisy, mask=mask, params=params)
  np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rejects_attention_bias(name):
  q, k, v = qkv(13, b=1)
  with pytest.raises(ConfigError, match=f"which {name} attention cannot apply"):
    attend(direct(VARIANTS[name]), q, k, v, bias=lambda *a: 0.0)


@pytest.mark.parametrize("name", ["linformer", "nystrom"])
def test_lowrank_rejects_segment_ids(name):
  q, k, v = qkv(14, b=1)
  with pytest.raises(ConfigError, match="cannot keep packed segments apart"):
    attend(direct(VARIANTS[name]), q, k, v, segment_ids=jnp.zeros((1, 12), jnp.int32))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_one_listops_training_run(tmp_path, name):
  config = tiny_listops(tmp_path / "cache", num_steps=2, eval_every=2, checkpoint_every=2)
  config.model.attention = {"name": name}
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert np.isfinite(metrics["loss"])
