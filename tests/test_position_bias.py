"""Property tests of the logit-bias positions: ALiBi (Press et al. 2022) and T5 relative
buckets (Raffel et al. 2020)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.model import Encoder
from encoders.position import AlibiBias, T5RelativeBias, alibi_slopes, relative_bucket
from tests.conftest import tiny_config


def t5_bucket(relative_position, num_buckets=32, max_distance=128):
  """Mesh TensorFlow's `_relative_position_bucket`, bidirectional, transcribed to Python."""
  n = -relative_position
  num_buckets //= 2
  ret = num_buckets if n < 0 else 0
  n = abs(n)
  max_exact = num_buckets // 2
  if n < max_exact:
    return ret + n
  large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
  return ret + min(large, num_buckets - 1)


def test_alibi_slopes_follow_the_paper():
  np.testing.assert_allclose(alibi_slopes(8), 2.0 ** -np.arange(1, 9))
  np.testing.assert_allclose(alibi_slopes(4), 2.0 ** -np.array([2, 4, 6, 8]))
  # 6 heads: the 4-head slopes, then every other one of the 8-head slopes.
  np.testing.assert_allclose(alibi_slopes(6), 2.0 ** -np.array([2, 4, 6, 8, 1, 3]))


def test_alibi_is_minus_slope_times_distance():
  c = tiny_config()
  positions = jnp.array([[[0, 1, 2, 3, 7]]])
  bias = AlibiBias(c).apply({}, positions, positions)
  distance = np.abs(np.subtract.outer([0, 1, 2, 3, 7], [0, 1, 2, 3, 7]))
  expected = -alibi_slopes(c.num_heads)[:, None, None] * distance
  np.testing.assert_allclose(bias[0], expected, rtol=1e-6)


def test_t5_buckets_match_the_reference():
  relative = np.arange(-300, 301)
  for buckets, distance in ((32, 128), (8, 20)):
    ours = relative_bucket(jnp.asarray(relative), buckets, distance)
    np.testing.assert_array_equal(ours, [t5_bucket(int(r), buckets, distance) for r in relative])


def test_t5_bias_reads_the_table_by_relative_position_and_head():
  c = tiny_config()
  module = T5RelativeBias(c)
  q_pos, k_pos = jnp.array([[[0, 3, 40]]]), jnp.array([[[0, 1, 9, 200]]])
  params = module.init(jax.random.PRNGKey(0), q_pos, k_pos)
  table = jax.random.normal(jax.random.PRNGKey(1), (32, c.num_heads))
  variables = {"params": {"relative_bias": table}}
  bias = module.apply(variables, q_pos, k_pos)
  assert params["params"]["relative_bias"].unbox().shape == (32, c.num_heads)
  for i, q in enumerate([0, 3, 40]):
    for j, k in enumerate([0, 1, 9, 200]):
      np.testing.assert_allclose(bias[0, :, i, j], table[t5_bucket(k - q)])
  np.testing.assert_allclose(module.apply(variables, q_pos + 5, k_pos + 5), bias)
  # Per-head key positions (a per-head layout) pick each head's own row of the table.
  per_head = jnp.stack([k_pos[0, 0] + h for h in range(c.num_heads)])[None]
  mixed = module.apply(variables, q_pos, per_head)
  for h in range(c.num_heads):
    alone = module.apply(variables, q_pos, per_head[:, h:h + 1])
    np.testing.assert_allclose(mixed[0, h], alone[0, h])


def test_t5_table_is_one_per_layer_under_scan():
  c = tiny_config(position={"name": "t5_relative"}, scan_layers=True)
  tokens = jnp.ones((1, 8), jnp.int32)
  params = jax.jit(Encoder(c).init)(jax.random.PRNGKey(0), tokens)["params"]
  table = params["blocks"]["attention"]["position_bias"]["relative_bias"]
  assert table.unbox().shape == (c.num_layers, 32, c.num_heads)
  assert "position" not in params  # nothing added to the embeddings


def test_t5_bad_buckets_raise_config_error():
  c = tiny_config()
  with pytest.raises(ConfigError, match="model.position.num_buckets="):
    T5RelativeBias(c, num_buckets=7).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 2), int),
                                          jnp.zeros((1, 1, 2), int))
