"""Tests that need an accelerator, marked `gpu` or `tpu` (tests/conftest.py skips them on other
backends and runs them on JAX's own backend when they are selected alone; scripts/device_check.sh
runs them on a lent machine):

    python -m pytest -q -m "gpu or tpu" tests

Each compares an accelerator-only path with the XLA reference the CPU suite tests.
"""

from __future__ import annotations

from contextlib import nullcontext

import flax.linen as nn
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


def layer_grads(fields: dict, impl: str, x, mask, segment_ids, params=None, **options):
  """(params, output at real positions, gradients w.r.t. params and input) of the attention
  layer of `tiny_config(**fields)` on `impl` (`options` merged into `model.attention`)."""
  attention = {**fields["attention"], "implementation": impl, **options}
  layer = tiny_config(**{**fields, "attention": attention}).build("attention")
  if params is None:
    params = nn.unbox(layer.init(jax.random.PRNGKey(0), x, mask=mask, segment_ids=segment_ids))

  def loss(params, x):
    y = layer.apply(params, x, mask=mask, segment_ids=segment_ids).astype(jnp.float32)
    y = jnp.where(mask[..., None], y, 0.0)  # padding queries may attend anywhere
    return jnp.sum(jnp.sin(y)), y

  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  del grads[0]["params"]["key"]["bias"]  # no gradient (it shifts a query's scores alike): noise
  return params, y, grads


# Splash serves dense and every block-sparse layout; rows padded (the second one) and, where a
# layout has no global tokens (globals are row positions, not per packed sequence), packed.
SPLASH_CASES = {
    "dense": (dict(name="dense"), True),
    "local": (dict(name="local", block_size=128, window_tokens=256), True),
    "bigbird": (dict(name="bigbird", block_size=128), False),
    "longformer": (dict(name="longformer", block_size=128, window_tokens=256), False),
}


def splash_vs_xla(name: str, dtype: str, rtol: float, *, length: int = 1024, dim: int = 256,
                  interpret: bool = False):
  """Splash against the XLA path of the same layer (the reference in exact f32): outputs at
  real positions and gradients w.r.t. parameters and input."""
  attention, packed = SPLASH_CASES[name]
  fields = dict(dim=dim, num_heads=dim // 64, max_length=length, dtype=dtype,
                attention=attention)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, length, dim)), jnp.float32)
  mask = jnp.arange(length)[None] < jnp.array([[length], [length - length // 5]])
  segment_ids = (jnp.stack([jnp.zeros(length, jnp.int32), jnp.arange(length) // (length // 3)])
                 if packed else None)
  with jax.default_matmul_precision("highest"):
    params, y_xla, grads_xla = layer_grads(fields, "xla", x, mask, segment_ids)
  options = dict(interpret=True) if interpret else {}
  _, y_splash, grads_splash = layer_grads(fields, "splash", x, mask, segment_ids, params,
                                          **options)
  assert_close(y_splash, y_xla, rtol)
  assert_close(grads_splash, grads_xla, rtol)


# f32: the reference multiplies in exact f32; the kernels' f32 dots are left to Mosaic's default
# (possibly fewer bf16 passes on the MXU), hence 2e-3 of the largest entry, not 1e-5 as
# interpreted on CPU. A wrong mask or rescaling is off by O(1).
@pytest.mark.tpu
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-3), ("bfloat16", 2e-2)])
@pytest.mark.parametrize("name", list(SPLASH_CASES))
def test_splash_matches_xla_on_tpu(name, dtype, rtol):
  splash_vs_xla(name, dtype, rtol)


def megablox_vs_blocked(dtype: str, rtol: float, *, dim: int = 256, interpret: bool = False):
  """The MoE layer's Pallas megablox grouped matmul against `blocked`: outputs and gradients
  w.r.t. parameters and input (dim a multiple of 128: Mosaic's column tiles)."""
  moe = dict(name="moe", num_experts=4, top_k=2, expert_dim=dim)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 128, dim)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 37, (4, 128)), jnp.int32)
  params, results = None, {}
  for matmul in ("blocked", "megablox"):
    options = dict(interpret=True) if interpret and matmul == "megablox" else {}
    config = tiny_config(dim=dim, num_layers=1, dtype=dtype,
                         ffn=dict(moe, grouped_matmul=matmul, **options))
    layer = config.build("ffn")
    if params is None:
      params = nn.unbox(layer.init(jax.random.PRNGKey(0), x, token_ids=tokens))

    def loss(params, x, layer=layer, dtype=config.compute_dtype):
      y, _ = layer.apply(params, x.astype(dtype), token_ids=tokens)
      return jnp.sum(jnp.sin(y.astype(jnp.float32))), y

    run = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    exact = jax.default_matmul_precision("highest") if matmul == "blocked" else nullcontext()
    with exact:  # the reference in exact f32 (XLA's default on a TPU is one bf16 pass)
      results[matmul] = run(params, x)
  (_, y_blocked), grads_blocked = results["blocked"]
  (_, y_megablox), grads_megablox = results["megablox"]
  assert_close(y_megablox, y_blocked, rtol)
  assert_close(grads_megablox, grads_blocked, rtol)


@pytest.mark.tpu
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-3), ("bfloat16", 2e-2)])
def test_megablox_matches_blocked_on_tpu(dtype, rtol):
  megablox_vs_blocked(dtype, rtol)


@pytest.mark.slow
def test_the_tpu_comparisons_run_interpreted_on_cpu():
  """The TPU tests' bodies at small sizes with the kernels in Pallas' interpreter, so that a
  lent TPU's first run executes comparisons known to work."""
  for name in SPLASH_CASES:
    splash_vs_xla(name, "float32", 1e-4, length=256, dim=128, interpret=True)
  megablox_vs_blocked("float32", 1e-4, dim=128, interpret=True)
