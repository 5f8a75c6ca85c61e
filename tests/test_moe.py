"""Mixture of experts (encoders/moe): routers, both dispatch paths against naive references,
aux losses, placement every k-th block and upcycling. The runner round trip (dense run ->
upcycled MoE run, aux metrics in metrics.jsonl) and expert parallelism: test_moe_parallel.py.
Layer-level checks run eagerly (tiny shapes: cheaper than compiling)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.ffn import GLU, MLP
from encoders.model import Model
from encoders.moe import routers, upcycle
from encoders.moe.layer import MoE
from tests.conftest import tiny_config

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(2, 16, 32)), jnp.float32)
TOKENS = jnp.asarray(RNG.integers(4, 37, size=(2, 16)), jnp.int32)


def moe_layer(**options):
  """A standalone layer; one block, so its metrics are not divided among several MoE blocks."""
  config = tiny_config(num_layers=1, ffn=dict(name="moe", **options))
  return MoE(config, **options)


def init(layer, x=X, **kwargs):
  return nn.unbox(layer.init(jax.random.PRNGKey(0), x, token_ids=TOKENS, **kwargs))


def gelu(x):
  return np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False))


def expert_ffn(params, e, x):
  """Expert e of an `mlp` MoE, in numpy."""
  h = gelu(x @ params["wi"]["kernel"][e] + params["wi"]["bias"][e])
  return h @ params["wo"]["kernel"][e] + params["wo"]["bias"][e]


def naive_top_k(params, x, k):
  logits = x @ np.asarray(params["router"], np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  expert = np.argsort(-probs, axis=-1)[:, :k]
  gate = np.take_along_axis(probs, expert, -1)
  return expert, gate / gate.sum(-1, keepdims=True), probs


@pytest.mark.slow
@pytest.mark.parametrize("grouped_matmul", ["blocked", "ragged"])
def test_dropless_equals_capacity_when_nothing_drops(grouped_matmul):
  dropless = moe_layer(num_experts=4, grouped_matmul=grouped_matmul, block_size=8)
  capacity = moe_layer(num_experts=4, dispatch="capacity", eval_capacity_factor=2.0)  # C = N
  params = init(dropless)

  def run(layer):
    def loss(p, x):
      y, aux = layer.apply(p, x, token_ids=TOKENS)
      return jnp.sum(jnp.sin(y)), (y, aux)
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, X)

  (_, (y_a, aux_a)), grads_a = run(dropless)
  (_, (y_b, aux_b)), grads_b = run(capacity)
  assert float(aux_b["dropped_fraction"]) == 0.0
  np.testing.assert_allclose(y_a, y_b, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads_a, grads_b)
  for name in ("load_balance_loss", "router_z_loss", "expert_load"):
    np.testing.assert_allclose(aux_a[name], aux_b[name], rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5),
                                        pytest.param("bfloat16", 2**-6, marks=pytest.mark.slow)])
def test_megablox_equals_blocked(dtype, tol):
  """The Pallas TPU kernel in interpret mode: 64 sorted rows in 24-row tiles (8 padding rows
  join the last group), 16-column tiles (k 32, n 48); outputs and gradients w.r.t. params and
  input within `tol` of each array's largest entry. bf16: both paths round their operands and
  outputs to bf16 in different orders; measured <= 0.0053 (1.4 ulps of 2^-8), tolerance 4 ulps."""
  options = dict(num_experts=4, block_size=24)
  config = tiny_config(num_layers=1, dtype=dtype, ffn=dict(name="moe", **options))
  params = init(moe_layer(num_experts=4))  # float32 parameters, whatever the compute dtype

  def run(layer):
    def loss(p, x):
      y, _ = layer.apply(p, x, token_ids=TOKENS)
      return jnp.sum(jnp.sin(y.astype(jnp.float32))), y
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, X.astype(config.compute_dtype))

  (_, y_a), grads_a = run(MoE(config, grouped_matmul="megablox", interpret=True, **options))
  (_, y_b), grads_b = run(MoE(config, grouped_matmul="blocked", **options))
  assert y_a.dtype == y_b.dtype == config.compute_dtype

  def close(a, b):
    a, b = np.float32(a), np.float32(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.max(np.abs(b)))
  jax.tree.map(close, (y_a, grads_a), (y_b, grads_b))


def test_auto_is_blocked_on_cpu():
  auto, blocked = moe_layer(num_experts=4), moe_layer(num_experts=4, grouped_matmul="blocked")
  assert auto.grouped_matmul == "auto" and auto.resolved_matmul == "blocked"
  params = init(blocked)
  np.testing.assert_array_equal(auto.apply(params, X, token_ids=TOKENS)[0],
                                blocked.apply(params, X, token_ids=TOKENS)[0])
  # What `auto` on a TPU checks before it picks megablox (else blocked), and explicit megablox:
  assert auto.megablox_misfit() == "model.dim=32 must be a multiple of 128"
  with pytest.raises(ConfigError, match=r"^model.ffn.grouped_matmul='megablox': model.dtype="
                     r"'float16'; allowed: float32, bfloat16$"):
    MoE(tiny_config(dtype="float16"), grouped_matmul="megablox", interpret=True)


def test_capacity_drops_match_a_naive_reference():
  """Priority: every token's first choice (in token order), then every second choice."""
  layer = moe_layer(num_experts=4, dispatch="capacity", eval_capacity_factor=0.5)
  params = init(layer)
  y, aux = layer.apply(params, X, token_ids=TOKENS)
  p = jax.tree.map(np.asarray, params["params"])
  x = np.asarray(X, np.float64).reshape(-1, 32)
  n, k, e = x.shape[0], 2, 4
  cap = int(np.ceil(k * n * 0.5 / e))
  expert, gate, _ = naive_top_k(p, x, k)
  count, kept = np.zeros(e, int), np.zeros((n, k), bool)
  for j in range(k):
    for t in range(n):
      if count[expert[t, j]] < cap:
        kept[t, j], count[expert[t, j]] = True, count[expert[t, j]] + 1
  expected = np.zeros_like(x)
  for t in range(n):
    for j in range(k):
      if kept[t, j]:
        expected[t] += gate[t, j] * expert_ffn(p, expert[t, j], x[t])
  assert 0 < (~kept).mean() < 1
  np.testing.assert_allclose(float(aux["dropped_fraction"]), (~kept).mean(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(y).reshape(n, -1), expected, atol=1e-5)


def test_padding_takes_no_capacity_and_is_left_out_of_aux():
  layer = moe_layer(num_experts=4, dispatch="capacity", eval_capacity_factor=1.0)
  mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [9]]))
  params = init(layer, mask=mask)
  noisy = X.at[1, 9:].set(100.0)
  (y_a, aux_a), (y_b, aux_b) = (layer.apply(params, x, token_ids=TOKENS, mask=mask)
                                for x in (X, noisy))
  np.testing.assert_allclose(np.asarray(y_a)[np.asarray(mask)],
                             np.asarray(y_b)[np.asarray(mask)], atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), aux_a, aux_b)


@pytest.mark.parametrize("options", [dict(dispatch="capacity", eval_capacity_factor=0.5),
                                     dict(router="expert_choice", eval_capacity_factor=0.5)],
                         ids=["capacity", "expert_choice"])
@pytest.mark.slow
def test_capacity_comes_from_the_real_tokens(options):
  """A padded batch (25 real of 32 tokens) gets the capacity of its 25 real tokens: the same
  outputs, drops and loads as those tokens alone in an unpadded batch."""
  layer = moe_layer(num_experts=4, **options)
  mask = np.arange(16)[None] < np.array([[16], [9]])
  params = init(layer, mask=jnp.asarray(mask))
  y_padded, aux_padded = layer.apply(params, X, token_ids=TOKENS, mask=jnp.asarray(mask))
  real_x, real_tokens = X[jnp.asarray(mask)][None], TOKENS[jnp.asarray(mask)][None]
  y_real, aux_real = layer.apply(params, real_x, token_ids=real_tokens)
  np.testing.assert_allclose(np.asarray(y_padded)[mask], y_real[0], atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), aux_padded, aux_real)
  assert routers.capacity(32, 2, 0.5, 4) == 8 and routers.capacity(25, 2, 0.5, 4) == 7
  for n in range(33):
    assert int(routers.real_capacity(jnp.asarray(n), 32, 2, 0.5, 4)) == routers.capacity(
        n, 2, 0.5, 4)


def test_load_balance_loss_hand_built_and_one_when_balanced():
  probs = jnp.asarray([[.9, .1], [.8, .2], [.3, .7], [.6, .4]])
  real = jnp.ones(4)
  expert = jnp.asarray([[0], [0], [1], [0]])
  loss = routers.load_balance_loss(probs, expert, jnp.ones((4, 1), bool), real)
  # f = (3/4, 1/4), P = (0.65, 0.35): 2 * (0.75 * 0.65 + 0.25 * 0.35)
  np.testing.assert_allclose(float(loss), 1.15, rtol=1e-6)
  balanced = jnp.asarray([[0], [1], [0], [1]])
  np.testing.assert_allclose(
      float(routers.load_balance_loss(probs, balanced, jnp.ones((4, 1), bool), real)), 1.0,
      rtol=1e-6)
  # a padding token counts neither in f nor in P
  masked = routers.load_balance_loss(probs, expert, jnp.asarray([[1], [1], [1], [0]], bool),
                                     jnp.asarray([1., 1., 1., 0.]))
  f, p = np.array([2, 1]) / 3, np.array([2.0, 1.0]) / 3
  np.testing.assert_allclose(float(masked), 2 * np.sum(f * p), rtol=1e-6)


def test_expert_choice_takes_exactly_capacity_top_tokens():
  logits = jnp.asarray(RNG.normal(size=(16, 4)), jnp.float32)
  mask = jnp.asarray(np.arange(16) < 13)
  cap = routers.capacity(16, 2, 1.0, 4)
  assert cap == 8
  token, gate = routers.expert_choice(logits, cap, mask)
  probs = np.asarray(jax.nn.softmax(logits, -1))
  for e in range(4):
    assert len(set(np.asarray(token[e]).tolist())) == cap
    assert set(np.asarray(token[e]).tolist()) == set(np.argsort(-np.where(
        np.asarray(mask), probs[:, e], -1))[:cap].tolist())
    np.testing.assert_allclose(gate[e], probs[np.asarray(token[e]), e] * np.asarray(mask)[
        np.asarray(token[e])], rtol=1e-6)
  layer = moe_layer(num_experts=4, router="expert_choice", eval_capacity_factor=1.0)
  _, aux = layer.apply(init(layer), X, token_ids=TOKENS)
  np.testing.assert_allclose(aux["expert_load"], np.full(4, 0.25), rtol=1e-6)


def test_hash_routing_is_deterministic_and_parameter_free():
  layer = moe_layer(num_experts=4, router="hash")
  params = init(layer)
  assert set(params["params"]) == {"wi", "wo"}
  expert = np.asarray(routers.hash_experts(TOKENS.reshape(-1), 4))
  np.testing.assert_array_equal(expert, routers.hash_experts(TOKENS.reshape(-1), 4))
  assert len(set(expert.tolist())) > 1
  y, aux = layer.apply(params, X, token_ids=TOKENS)
  p = jax.tree.map(np.asarray, params["params"])
  x = np.asarray(X).reshape(-1, 32)
  expected = np.stack([expert_ffn(p, e, row) for e, row in zip(expert, x)])
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 32), expected, atol=1e-5)
  np.testing.assert_allclose(aux["expert_load"], np.bincount(expert, minlength=4) / 32)


def test_switch_and_topk_orders():
  layer = moe_layer(num_experts=4, router="switch")
  params = init(layer)
  _, aux = layer.apply(params, X, token_ids=TOKENS)
  assert aux["expert_load"].shape == (4,) and float(aux["dropped_fraction"]) == 0.0
  logits = jnp.asarray([[2.0, 1.0, 0.0]])
  _, gate = routers.token_choice(logits, 2, "topk_then_softmax", False, jnp.ones(1))
  np.testing.assert_allclose(gate, [[1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))]], rtol=1e-6)
  _, gate = routers.token_choice(logits, 2, "softmax_then_topk", False, jnp.ones(1))
  np.testing.assert_allclose(gate, jax.nn.softmax(logits)[:, :2], rtol=1e-6)


@pytest.mark.parametrize("options, message", [
    (dict(router="sinkhorn"), "model.ffn.router='sinkhorn'"),
    (dict(router="switch", top_k=2), "model.ffn.top_k=2"),
    (dict(num_experts=2, top_k=3), "model.ffn.top_k=3"),
    (dict(every=3), "model.ffn.every=3"),
    (dict(capacity_factor=0.0), "model.ffn.capacity_factor"),
    (dict(grouped_matmul="megablox"), "model.ffn.grouped_matmul='megablox' needs a TPU (or "
     "model.ffn.interpret=True); allowed on cpu: auto, blocked, ragged"),
])
def test_bad_options_are_one_line_errors(options, message):
  with pytest.raises(ConfigError) as error:  # the config (every) or the module (the others)
    Model(tiny_config(ffn=dict(name="moe", **options))).init(jax.random.PRNGKey(0),
                                                             {"tokens": TOKENS})
  assert message in str(error.value) and "\n" not in str(error.value)


MASK = jnp.asarray(np.arange(16)[None] < np.array([[16], [11]]))
REAL = np.asarray(MASK)  # the MoE gives padding no expert, a dense FFN computes it anyway


@pytest.mark.parametrize("options", [
    dict(), dict(order="topk_then_softmax", renormalize=False), dict(router="hash"),
    dict(expert="glu", activation="silu", num_shared_experts=2, dispatch="capacity",
         capacity_factor=2.0),
    dict(router="expert_choice", capacity_factor=2.0),
    dict(num_shared_experts=1, grouped_matmul="ragged")], ids=str)
def test_upcycled_layer_equals_the_dense_ffn(options):
  moe = moe_layer(num_experts=4, **options)
  dense_cls = GLU if options.get("expert") == "glu" else MLP
  dense = dense_cls(moe.config, activation=moe.activation)
  dense_params = nn.unbox(dense.init(jax.random.PRNGKey(3), X))["params"]
  params = upcycle.upcycle_ffn(dense_params, moe.config, jax.random.PRNGKey(2))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, init(moe)["params"])
  assert upcycle.is_exact(moe.config)
  expected, _ = dense.apply({"params": dense_params}, X)
  y, _ = moe.apply({"params": params}, X, token_ids=TOKENS, mask=MASK)
  np.testing.assert_allclose(np.asarray(y)[REAL], np.asarray(expected)[REAL], atol=1e-5)


def test_non_exact_routers_and_drop_upcycling_differ_from_the_dense_ffn():
  dense = MLP(moe_layer().config)
  dense_params = nn.unbox(dense.init(jax.random.PRNGKey(3), X))["params"]
  expected, _ = dense.apply({"params": dense_params}, X)
  for options, drop in ((dict(router="switch"), 0.0),
                        (dict(router="expert_choice", eval_capacity_factor=1.0), 0.0),
                        (dict(dispatch="capacity", eval_capacity_factor=0.5), 0.0),
                        (dict(router="hash", dispatch="capacity", eval_capacity_factor=0.5), 0.0),
                        (dict(), 0.5)):
    moe = moe_layer(num_experts=4, **options)
    assert upcycle.is_exact(moe.config) == bool(drop), options  # drop: only the drop differs
    params = upcycle.upcycle_ffn(dense_params, moe.config, jax.random.PRNGKey(2), drop)
    y, aux = moe.apply({"params": params}, X, token_ids=TOKENS)
    assert not np.allclose(y, expected, atol=1e-4), options
    if options.get("dispatch") == "capacity":  # gates sum to 1, but assignments drop
      assert float(aux["dropped_fraction"]) > 0
  wi = params["wi"]["kernel"]
  assert not np.allclose(wi[0], wi[1])  # Drop-Upcycling re-initialises experts independently
  np.testing.assert_allclose(np.mean(np.all(wi[0] == dense_params["wi"]["kernel"], axis=0)), 0.5)
  with pytest.raises(ConfigError, match="expert_dim"):
    upcycle.upcycle({"encoder": {}}, tiny_config(num_layers=1),
                    moe_layer(expert_dim=8).config, jax.random.PRNGKey(0))


def model_outputs(config, params):
  inputs = {"tokens": TOKENS, "mask": MASK}
  return jax.jit(Model(config).apply)({"params": params}, inputs)


def init_model(config):
  return nn.unbox(Model(config).init(jax.random.PRNGKey(1), {"tokens": TOKENS}))["params"]


@pytest.mark.parametrize("dense_fields, options, scan", [
    (dict(ffn=dict(name="mlp")), dict(router="hash", every=2), False),
    (dict(num_layers=4, ffn=dict(name="glu", activation="silu")),
     dict(expert="glu", activation="silu", num_shared_experts=1, every=2), True),
], ids=["hash-every2-unscanned", "glu-shared-every2-scanned"])
def test_upcycled_model_equals_dense_in_both_layouts(dense_fields, options, scan):
  """Dense (scanned) -> MoE in every 2nd block: the unscanned list of blocks, or scanned groups
  of (dense block, MoE block); per-MoE-block metrics average over the MoE blocks."""
  dense = tiny_config(**dense_fields)
  moe = tiny_config(**{**dense_fields, "ffn": dict(name="moe", num_experts=4, **options),
                       "scan_layers": scan})
  params = init_model(dense)
  upcycled = upcycle.upcycle(params, dense, moe, jax.random.PRNGKey(2))
  abstract = jax.eval_shape(Model(moe).init, jax.random.PRNGKey(1), {"tokens": TOKENS})
  assert jax.tree.map(jnp.shape, upcycled) == jax.tree.map(jnp.shape,
                                                           nn.unbox(abstract)["params"])
  encoder = upcycled["encoder"]
  moe_ffn = encoder["blocks"]["block_1"]["ffn"] if scan else encoder["blocks_1"]["ffn"]
  dense_ffn = encoder["blocks"]["block_0"]["ffn"] if scan else encoder["blocks_0"]["ffn"]
  assert "wo" in moe_ffn and moe_ffn["wo"]["kernel"].shape[-3] == 4 and "shared" not in dense_ffn
  (dense_out, _), (moe_out, aux) = model_outputs(dense, params), model_outputs(moe, upcycled)
  np.testing.assert_allclose(np.asarray(moe_out)[REAL], np.asarray(dense_out)[REAL], atol=1e-5)
  np.testing.assert_allclose(float(jnp.sum(aux["expert_load"])), 1.0, rtol=1e-6)
  assert float(aux["dropped_fraction"]) == 0.0


def test_moe_config_is_valid():  # the MoE layer benchmark: tests/test_bench.py
  from configs import mlm_moe  # pylint: disable=import-outside-toplevel
  from experiments.train import validate_early  # pylint: disable=import-outside-toplevel
  config = mlm_moe.get_config("tiny")
  validate_early(config)
  assert config.train.aux_loss_weights["load_balance_loss"] == 0.01
