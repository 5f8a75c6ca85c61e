"""Warmup-stable-decay schedule with 1 - sqrt decay, and StableAdamW's per-tensor update
clipping (experiments/optim.py), against hand-computed values."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from encoders.errors import ConfigError
from experiments import optim


def train(**changes) -> ml_collections.ConfigDict:
  t = dict(learning_rate=1.0, warmup_steps=10, num_steps=110, schedule="wsd",
           decay_fraction=0.2, end_lr_fraction=0.0, b1=0.9, b2=0.98, eps=1e-8,
           weight_decay=0.0, grad_clip_norm=0.0, optimizer="stable_adamw")
  return ml_collections.ConfigDict({**t, **changes})


def test_wsd_warms_up_holds_then_decays_as_one_minus_sqrt():
  schedule = optim.learning_rate_schedule(train())
  # decay over the last 22 steps (20% of 110): 88 .. 110
  np.testing.assert_allclose([schedule(s) for s in (5, 10, 50, 88, 99, 110)],
                             [0.5, 1.0, 1.0, 1.0, 1 - np.sqrt(0.5), 0.0], atol=1e-6)
  ended = optim.learning_rate_schedule(train(end_lr_fraction=0.1))
  np.testing.assert_allclose(ended(99), 0.1 + 0.9 * (1 - np.sqrt(0.5)), atol=1e-6)
  with pytest.raises(ConfigError, match="train.decay_fraction=0.0 must be in"):
    optim.learning_rate_schedule(train(decay_fraction=0.0))


def test_stable_adamw_is_adamw_until_a_tensor_outruns_its_second_moment():
  t = train(schedule="constant", warmup_steps=0)
  stable, _ = optim.make_optimizer(t)
  plain, _ = optim.make_optimizer(train(schedule="constant", warmup_steps=0, optimizer="adamw"))
  params = {"a": {"kernel": jnp.ones((4,))}, "b": {"kernel": jnp.ones((3,))}}
  s_state, p_state = stable.init(params), plain.init(params)
  small = {"a": {"kernel": jnp.full((4,), 0.1)}, "b": {"kernel": jnp.full((3,), 0.1)}}
  # Step 1: v_hat = g^2 exactly, RMS(g^2 / v_hat) = 1, no clipping.
  s_up, s_state = stable.update(small, s_state, params)
  p_up, p_state = plain.update(small, p_state, params)
  np.testing.assert_allclose(s_up["a"]["kernel"], p_up["a"]["kernel"], rtol=1e-6)
  # Step 2: a 10x spike on tensor a: its bias-corrected second moment lags g^2 = 1.
  spike = {"a": {"kernel": jnp.full((4,), 1.0)}, "b": {"kernel": jnp.full((3,), 0.1)}}
  s_up, _ = stable.update(spike, s_state, params)
  p_up, _ = plain.update(spike, p_state, params)
  nu = 0.98 * (0.02 * 0.1 ** 2) + 0.02 * 1.0 ** 2
  rms = np.sqrt(1.0 / (nu / (1 - 0.98 ** 2)))
  assert rms > 1
  np.testing.assert_allclose(s_up["a"]["kernel"], p_up["a"]["kernel"] / rms, rtol=1e-5)
  np.testing.assert_allclose(s_up["b"]["kernel"], p_up["b"]["kernel"], rtol=1e-6)
  assert isinstance(stable, optax.GradientTransformation)
  with pytest.raises(ConfigError, match="train.optimizer='lion'; allowed: adamw, stable_adamw"):
    optim.make_optimizer(train(optimizer="lion"))
