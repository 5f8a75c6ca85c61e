"""The accelerator kernels (TPU splash, our Pallas GPU block-sparse kernel) against the XLA
engine in Pallas' interpreter on CPU: every layout with padding, packing, global tokens,
per-head random blocks and token windows; a row with no allowed key; dense; values and
gradients, f32 and bf16. Then how `implementation` is chosen, and (marked `gpu`) the compiled
Pallas GPU kernel on a real GPU (cuDNN's test is in tests/test_hardware.py)."""

from __future__ import annotations

import contextlib
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.attention import implementation, layouts, sparse_engine
from encoders.attention.base import dense_attention_mask
from encoders.attention.kernels import dispatch, pallas_gpu
from encoders.config import ModelConfig
from encoders.errors import ConfigError

H, D, BS, N = 2, 16, 16, 100  # 7 blocks of 16 (the last one partly padding)
NB = -(-N // BS)
LAYOUTS = {  # name -> (layout, global tokens, window_tokens)
    "local": (layouts.local_layout(NB, 1), (), None),
    "local_tokens": (layouts.local_layout(NB, 2), (), 20),
    "block": (layouts.block_layout(NB), (), None),
    "strided": (layouts.strided_layout(NB, 3, 1, "fixed"), (), None),
    "bigbird": (layouts.bigbird_layout(NB, H, 1, (0, NB - 1), 2, 0),
                tuple(range(BS)) + tuple(range((NB - 1) * BS, N)), None),
    "longformer_tokens": (layouts.local_layout(NB, 1), (0, 37), 9),
}
KERNELS = ("pallas_gpu", "splash")
# Interpreting the Pallas GPU kernels compiles slowly on CPU (~10 s a case): the default suite
# checks the layouts that combine the most features (f32: Longformer's global tokens and token
# window; bf16: BigBird's global and random blocks), `-m slow` (CI) every layout.
SLOW = {("pallas_gpu", name) for name in ("local", "local_tokens", "block", "strided",
                                          "bigbird", "longformer")}
CASES = [pytest.param(kernel, name, marks=[pytest.mark.slow] * ((kernel, name) in SLOW))
         for kernel in KERNELS for name in sorted(LAYOUTS)]
BF16_CASES = [pytest.param(kernel, name, marks=[pytest.mark.slow] * (name != "bigbird"))
              for kernel in KERNELS for name in sorted(LAYOUTS)]


def inputs(dtype=jnp.float32, seed=0):
  """q, k, v, a loss weight, a padding mask (row 1 padded from 70) and packed segments."""
  rng = np.random.default_rng(seed)
  q, k, v, w = (jnp.asarray(rng.normal(size=(2, N, H, D)), dtype) for _ in range(4))
  mask = np.ones((2, N), bool)
  mask[1, 70:] = False
  segments = jnp.asarray(np.cumsum(rng.random((2, N)) < 0.05, axis=1))
  return q, k, v, w, jnp.asarray(mask), segments


def outputs_and_grads(attend, q, k, v, w, mask):
  """Output and d(loss)/d(q, k, v), the loss reading real positions only (padding rows are
  unspecified: downstream ignores them)."""
  real = mask[:, :, None, None].astype(jnp.float32)

  def loss(q, k, v):
    out = attend(q, k, v)
    return jnp.sum(out.astype(jnp.float32) * w.astype(jnp.float32) * real), out

  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return out * real.astype(out.dtype), grads


def assert_close(got, want, tol):
  got_out, got_grads = got
  want_out, want_grads = want
  np.testing.assert_allclose(np.asarray(got_out, np.float32), np.asarray(want_out, np.float32),
                             atol=tol, rtol=tol)
  for g, r in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32),
                               atol=tol * 10, rtol=tol * 10)


def engine_and_kernel(layout, global_tokens, window, kernel, mask, segments):
  options = dict(block_size=BS, global_tokens=global_tokens, mask=mask, segment_ids=segments,
                 window_tokens=window)

  def reference(q, k, v):
    return sparse_engine.attention(q, k, v, layout, **options)

  def on_kernel(q, k, v):
    return dispatch.block_sparse(q, k, v, layout, implementation=kernel,
                                         interpret=True, **options)

  return reference, on_kernel


@pytest.mark.parametrize("kernel, name", CASES)
def test_kernel_matches_the_xla_engine_f32(kernel, name):
  layout, global_tokens, window = LAYOUTS[name]
  q, k, v, w, mask, segments = inputs()
  reference, on_kernel = engine_and_kernel(layout, global_tokens, window, kernel, mask,
                                           segments)
  assert_close(outputs_and_grads(on_kernel, q, k, v, w, mask),
               outputs_and_grads(reference, q, k, v, w, mask), 1e-5)


@pytest.mark.parametrize("kernel, name", BF16_CASES)
def test_kernel_matches_the_xla_engine_bf16(kernel, name):
  """bf16 operands, f32 softmax and accumulation on both sides: within bf16's resolution."""
  layout, global_tokens, window = LAYOUTS[name]
  q, k, v, w, mask, segments = inputs(jnp.bfloat16)
  reference, on_kernel = engine_and_kernel(layout, global_tokens, window, kernel, mask,
                                           segments)
  assert_close(outputs_and_grads(on_kernel, q, k, v, w, mask),
               outputs_and_grads(reference, q, k, v, w, mask), 2e-2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_row_with_no_allowed_key_outputs_zero(kernel):
  """Block 2 lists only block 5, whose keys are all in another segment: its queries have no
  key at all. The engine outputs 0 there; splash alone would return a mean of values."""
  layout = np.asarray(layouts.local_layout(NB, 0)).copy()
  layout[2, 0] = 5
  q, k, v, w, mask, _ = inputs()
  segments = jnp.asarray(np.repeat((np.arange(N) // (5 * BS))[None], 2, axis=0))
  reference, on_kernel = engine_and_kernel(layout, (), None, kernel, mask, segments)
  want = outputs_and_grads(reference, q, k, v, w, mask)
  got = outputs_and_grads(on_kernel, q, k, v, w, mask)
  assert np.all(np.asarray(want[0])[:, 2 * BS:3 * BS] == 0)
  assert_close(got, want, 1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_token_global(kernel):
  """BigBird with every block global: the kernel's own pattern is empty (splash skips every
  tile), all rows come from the global group; values and gradients finite and exact."""
  n = 128  # splash's tile: no padding key is left to it either
  layout = layouts.bigbird_layout(n // BS, H, 1, tuple(range(n // BS)), 0, 0)
  tokens = tuple(range(n))
  rng = np.random.default_rng(0)
  q, k, v, w = (jnp.asarray(rng.normal(size=(2, n, H, D)), jnp.float32) for _ in range(4))
  mask = jnp.arange(n)[None] < jnp.array([[n], [100]])
  reference, on_kernel = engine_and_kernel(layout, tokens, None, kernel, mask, None)
  got = outputs_and_grads(on_kernel, q, k, v, w, mask)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(got))
  assert_close(got, outputs_and_grads(reference, q, k, v, w, mask), 1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dense_on_kernels_matches_xla(kernel):
  q, k, v, w, mask, segments = inputs()

  def reference(q, k, v):
    return jax.nn.dot_product_attention(
        q, k, v, mask=_dense_mask(mask, segments), implementation="xla")

  def on_kernel(q, k, v):
    return dispatch.dense(q, k, v, implementation=kernel, mask=mask,
                                  segment_ids=segments, interpret=True)

  assert_close(outputs_and_grads(on_kernel, q, k, v, w, mask),
               outputs_and_grads(reference, q, k, v, w, mask), 1e-5)


def _dense_mask(mask, segments):
  return dense_attention_mask(mask, segments, mask.shape[1])


def test_transposed_layout_lists_each_pair_once():
  layout = layouts.bigbird_layout(NB, H, 1, (0,), 2, 0)
  columns = pallas_gpu.transpose_layout(np.asarray(layout), NB)
  for head in range(H):
    pairs = {(i, j) for i in range(NB) for j in layout[head, i] if j >= 0}
    back = {(i, j) for j in range(NB) for i in columns[head, j] if i >= 0}
    assert pairs == back


def test_kernel_tables_carry_each_rows_count():
  """The Pallas GPU kernels loop to each row's own block count (the table's last column), not
  the padded width: BigBird's transposed lists are padded to the busiest key block."""
  layout = np.asarray(layouts.bigbird_layout(64, H, 1, (0, 63), 3, 0))
  for table in (layout, pallas_gpu.transpose_layout(layout, 64)):
    counted = pallas_gpu.with_counts(table)
    np.testing.assert_array_equal(counted[..., :-1], table)
    np.testing.assert_array_equal(counted[..., -1], np.sum(table >= 0, axis=-1))
  columns = pallas_gpu.with_counts(pallas_gpu.transpose_layout(layout, 64))
  assert columns[..., -1].mean() < 0.6 * (columns.shape[-1] - 1)


def test_f32_products_follow_the_default_matmul_precision():
  """As XLA's dots: TF32 unless "highest"/"float32" is asked for (then IEEE f32)."""
  assert pallas_gpu.f32_precision() == jax.lax.Precision.DEFAULT
  for setting in ("highest", "float32"):
    with jax.default_matmul_precision(setting):
      assert pallas_gpu.f32_precision() == jax.lax.Precision.HIGHEST


def on_an_abstract_h200():
  """jax >= 0.12 lowers Triton for a named GPU (its compute capability); older jax needs none."""
  if not hasattr(jax.sharding, "AbstractDevice"):
    return contextlib.nullcontext()
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
  return jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))


def test_pallas_gpu_kernels_lower_to_triton_for_cuda():
  """Forward, dq and dk/dv kernels lower to Triton (the GPU compile itself needs a GPU)."""
  layout, global_tokens, window = LAYOUTS["longformer_tokens"]
  mask = jnp.ones((1, 128), bool)

  def loss(q, k, v):
    out = dispatch.block_sparse(q, k, v, layouts.local_layout(8, 1),
                                        implementation="pallas_gpu", block_size=BS,
                                        global_tokens=global_tokens, mask=mask,
                                        window_tokens=window)
    return jnp.sum(out.astype(jnp.float32))

  x = jax.ShapeDtypeStruct((1, 128, H, D), jnp.bfloat16)
  with on_an_abstract_h200():
    exported = jax.export.export(
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(
            x, x, x)
  names = re.findall(r'name = "(block_sparse_attention_\w+)"', exported.mlir_module())
  assert sorted(set(names)) == ["block_sparse_attention_dkv", "block_sparse_attention_dq",
                                "block_sparse_attention_fwd"]


def test_splash_kernels_lower_to_mosaic_for_tpu():
  """Splash's forward, dq and dk/dv kernels lower to Mosaic for TPU from our BigBird mask
  (per-head random blocks, global rows and columns) in bf16 with head dim 64."""
  n = 512
  layout = layouts.bigbird_layout(n // 64, H, 1, (0,), 2, 0)
  mask = jnp.ones((1, n), bool)

  def loss(q, k, v):
    out = dispatch.block_sparse(q, k, v, layout, implementation="splash", block_size=64,
                                        global_tokens=tuple(range(64)), mask=mask)
    return jnp.sum(out.astype(jnp.float32))

  x = jax.ShapeDtypeStruct((1, n, H, 64), jnp.bfloat16)
  exported = jax.export.export(
      jax.jit(jax.grad(loss, argnums=(0, 1, 2))), platforms=["tpu"],
      disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("tpu_custom_call")])(x, x, x)
  assert exported.mlir_module().count("stablehlo.custom_call @tpu_custom_call") == 3


# --- Choosing the implementation ---------------------------------------------------------


def layer_output(attention, dtype="float32", position="learned", length=64, dropout=0.0):
  config = ModelConfig.from_dict(dict(
      vocab_size=11, max_length=length, dim=H * D, num_heads=H, head_dim=D, num_layers=1,
      mlp_dim=8, dtype=dtype, attention=attention, position=dict(name=position),
      attention_dropout_rate=dropout))
  layer = config.build("attention")
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, H * D)), jnp.float32)
  params = layer.init(jax.random.PRNGKey(0), x)
  return layer.apply(params, x)


@pytest.mark.parametrize("name, options", [("dense", {}),
                                           ("local", dict(block_size=16, window_tokens=20))])
def test_registered_variants_run_on_kernels_and_match_xla(name, options):
  want = layer_output(dict(name=name, implementation="xla", **options))
  for kernel in KERNELS:
    got = layer_output(dict(name=name, implementation=kernel, interpret=True, **options))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=kernel)


def test_auto_is_xla_on_cpu():
  assert jax.default_backend() == "cpu"
  np.testing.assert_array_equal(layer_output(dict(name="local", block_size=16)),
                                layer_output(dict(name="local", block_size=16,
                                                  implementation="xla")))


@pytest.mark.parametrize("attention, settings, message", [
    (dict(name="local", block_size=16, implementation="pallas_gpu"), {},
     "implementation='pallas_gpu' cannot serve attention 'local': it runs on gpu, "
     "compiling for cpu (interpret=True runs it interpreted)"),
    (dict(name="dense", implementation="cudnn"), dict(dtype="bfloat16"),
     "implementation='cudnn' cannot serve attention 'dense': it runs on gpu"),
    (dict(name="local", block_size=16, implementation="cudnn"), {},
     "implementation='cudnn' is not available for attention 'local'; allowed: auto, xla, "
     "splash, pallas_gpu"),
    (dict(name="local", block_size=16, implementation="splash", interpret=True),
     dict(position="alibi"), "it cannot add a position bias to the logits"),
    (dict(name="local", block_size=16, implementation="splash", interpret=True),
     dict(dropout=0.1), "it has no attention dropout"),
    (dict(name="local", block_size=24, implementation="pallas_gpu", interpret=True), {},
     "it needs a power-of-two block size >= 16, got 24"),
    (dict(name="dense", implementation="splash", interpret=True, kernel_block_size=200), {},
     "kernel_block_size must be a multiple of 128, got 200"),
    (dict(name="dense", implementation="flash"), {},
     "model.attention.implementation='flash'; allowed: auto, xla, splash, pallas_gpu, cudnn"),
])
def test_a_request_the_kernel_cannot_serve_is_one_config_error(attention, settings, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    layer_output(attention, **settings)


def test_auto_prefers_the_backends_kernel_and_falls_back_with_one_log(monkeypatch, caplog):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  preferred = {"gpu": ("pallas_gpu",)}
  ok = dict(interpret=False, head_dim=64, dtype=jnp.bfloat16, dropout=False, tile=64,
            kernel_block_size=None)
  fine = implementation.problems(("xla", "pallas_gpu"), has_bias=False, **ok)
  assert implementation.choose("auto", "local", preferred, fine) == "pallas_gpu"
  biased = implementation.problems(("xla", "pallas_gpu"), has_bias=True, **ok)
  with caplog.at_level(logging.INFO):
    for _ in range(3):
      assert implementation.choose("auto", "local", preferred, biased) == "xla"
  assert sum("runs xla, not pallas_gpu" in r.message for r in caplog.records) == 1
  dense = implementation.problems(("xla", "cudnn"), has_bias=False, **{**ok, "dtype": "float32"})
  assert implementation.choose("auto", "dense", {"gpu": ("cudnn",)}, dense) == "xla"


def test_what_cudnn_refuses_is_a_fallback_reason(monkeypatch):
  """Packed rows (jax's cuDNN attention takes no segment ids), a head dim it refuses and
  whatever jax's own cuDNN checks refuse on the layer's shapes are reasons for `auto` to run
  xla, and one line for an explicit request: never a traceback from inside jax."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  ok = dict(interpret=False, head_dim=64, dtype=jnp.bfloat16, dropout=False, tile=64,
            kernel_block_size=None, has_bias=False)
  packed = implementation.problems(("xla", "cudnn"), packed=True, **ok)
  assert "takes no segment ids" in packed["cudnn"]
  odd = implementation.problems(("xla", "cudnn"), **{**ok, "head_dim": 36})
  assert "multiple of 8, got 36" in odd["cudnn"]
  for found in (packed, odd):
    assert implementation.choose("auto", "dense", {"gpu": ("cudnn",)}, found) == "xla"
    with pytest.raises(ConfigError, match="implementation='cudnn' cannot serve"):
      implementation.choose("cudnn", "dense", {"gpu": ("cudnn",)}, found)
  # jax's own checks, asked on shapes: a reason in one line, or None where they accept.
  probed = implementation.problems(("xla", "cudnn"), shape=(2, 128, 4, 64), **ok)["cudnn"]
  assert probed is None or (probed.startswith("jax's cuDNN attention refuses it: ")
                            and "\n" not in probed)


# --- On a real GPU (device_check) --------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-4), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", ["bigbird", "longformer_tokens"])
def test_compiled_pallas_gpu_kernel_matches_the_xla_engine(name, dtype, tol):
  layout, global_tokens, window = LAYOUTS[name]
  q, k, v, w, mask, segments = inputs(dtype)
  reference, _ = engine_and_kernel(layout, global_tokens, window, "pallas_gpu", mask, segments)

  def compiled(q, k, v):
    return dispatch.block_sparse(q, k, v, layout, implementation="pallas_gpu",
                                         block_size=BS, global_tokens=global_tokens, mask=mask,
                                         segment_ids=segments, window_tokens=window)

  # Both follow jax's default matmul precision, TF32 on H100/H200 for f32 (emulated, a gap of
  # ~1e-3 between two TF32 computations): "highest" makes both exact f32.
  with jax.default_matmul_precision("highest"):
    want = outputs_and_grads(reference, q, k, v, w, mask)
    got = outputs_and_grads(compiled, q, k, v, w, mask)
  assert_close(got, want, tol)
