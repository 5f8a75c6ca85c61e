"""Property test: any combination of registered variants and small shapes either trains one
step with a finite loss or is refused by our own one-line validation error, never by an XLA
or shape traceback."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders import registry
from encoders.errors import ConfigError
from encoders.model import Model
from tests.conftest import tiny_config

KINDS = ("attention", "connection", "ffn", "position", "norm")


@st.composite
def model_configs(draw):
  choice = {kind: {"name": draw(st.sampled_from(registry.names(kind)))} for kind in KINDS}
  head = draw(st.sampled_from(["mlm", "classification"]))
  return dict(
      choice, head={"name": head, **({"num_classes": 3} if head == "classification" else {})},
      dim=draw(st.sampled_from([8, 12, 16, 24])), num_heads=draw(st.sampled_from([1, 2, 3, 4])),
      num_layers=draw(st.integers(1, 3)), mlp_dim=draw(st.sampled_from([8, 16])),
      max_length=draw(st.sampled_from([8, 16, 24])),
      norm_position=draw(st.sampled_from(["pre", "post"])),
      dtype=draw(st.sampled_from(["float32", "bfloat16"])),
      scan_layers=draw(st.booleans()), dropout_rate=0.0), draw(st.sampled_from([5, 8, 16]))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(model_configs())
def test_every_draw_trains_or_is_refused_by_validation(drawn):
  fields, length = drawn
  try:
    config = tiny_config(**fields)
    model = Model(config)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(4, config.vocab_size, (2, length)), jnp.int32)
    mask = jnp.asarray(np.arange(length)[None] < np.array([[length], [length - 2]]))
    batch = {"tokens": tokens, "mask": mask}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)["params"]
  except ConfigError as error:
    assert "\n" not in str(error)
    return
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      out, _ = model.apply({"params": p}, batch)
      return jnp.mean(out.astype(jnp.float32) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), loss

  try:
    _, loss = step(params, optimizer.init(params))
  except ConfigError as error:
    assert "\n" not in str(error)
    return
  assert np.isfinite(float(loss))
