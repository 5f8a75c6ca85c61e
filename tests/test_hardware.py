"""Tests that need an accelerator, marked `gpu` or `tpu` (tests/conftest.py skips them on other
backends and runs them on JAX's own backend when they are selected alone):

    python -m pytest -q -m "gpu or tpu" tests

Each compares an accelerator-only path with the XLA reference the CPU suite tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import tiny_config


def assert_close(actual, expected, rtol: float):
  """Every leaf within `rtol` of the reference leaf's largest magnitude (bf16 rounding is
  relative to the values' scale, so elementwise rtol fails near zero)."""
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    np.testing.assert_allclose(a, e, atol=rtol * float(np.abs(e).max()), rtol=0)


@pytest.mark.gpu
def test_cudnn_dense_attention_matches_xla_in_bfloat16():
  """cuDNN's fused attention (`implementation="cudnn"`) against the XLA path of the same layer
  in bfloat16, with padding and packed segments: outputs at real positions and gradients."""
  batch, length, dim = 2, 512, 256
  configs = {impl: tiny_config(dim=dim, num_heads=4, max_length=length, dtype="bfloat16",
                               attention=dict(name="dense", implementation=impl))
             for impl in ("xla", "cudnn")}
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, length, dim)), jnp.float32)
  mask = jnp.arange(length)[None] < jnp.array([[length], [length - 100]])
  segment_ids = jnp.stack([jnp.zeros(length, jnp.int32), jnp.arange(length) // 200])
  params = configs["xla"].build("attention").init(jax.random.PRNGKey(0), x, mask=mask,
                                                  segment_ids=segment_ids)

  def run(impl):
    layer = configs[impl].build("attention")

    def loss(params, x):
      y = layer.apply(params, x, mask=mask, segment_ids=segment_ids).astype(jnp.float32)
      y = jnp.where(mask[..., None], y, 0.0)  # padding queries may attend anywhere
      return jnp.sum(y * y), y

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

  (_, y_xla), grads_xla = run("xla")
  (_, y_cudnn), grads_cudnn = run("cudnn")
  # The key projection's bias gets no gradient (it shifts all scores of a query alike): noise.
  for grads in (grads_xla, grads_cudnn):
    del grads[0]["params"]["key"]["bias"]
  assert_close(y_cudnn, y_xla, rtol=2e-2)
  assert_close(grads_cudnn, grads_xla, rtol=3e-2)
