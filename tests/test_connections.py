"""Cross-layer connections (encoders/connections.py): identity at initialisation, the paper
formulas, direct gradient paths, intermediate outputs, bad options, and every connection with
dense attention, GLU and RoPE trained for two steps through the runner. Shapes, padding,
packing, jit, per-parameter gradients and determinism of every connection's defaults are in
the shared contract tests."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from encoders import registry
from encoders.errors import ConfigError
from encoders.model import Block, Model
from experiments.metrics import read_jsonl
from experiments.train import train_and_evaluate
from tests.conftest import tiny_config
from tests.test_contracts import make_batch
from tests.test_train import tiny_listops

LAYERS = 2
BATCH = make_batch()


def init(config):
  model = Model(config)
  return model, nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), BATCH)["params"])


def loss(model, params):
  return jnp.mean(model.apply({"params": params}, BATCH)[0] ** 2)


def adam_step(model, params):
  """One optax.adam step on mean squared logits."""
  optimizer = optax.adam(1e-2)
  grads = jax.grad(functools.partial(loss, model))(params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return optax.apply_updates(params, updates)


@functools.partial(jax.jit, static_argnums=0)
def logits(model, params):
  return model.apply({"params": params}, BATCH)[0]


@functools.partial(jax.jit, static_argnums=0)
def before_and_after_step(model, params):
  """Logits at `params`, logits after one adam step and those params, in one compile."""
  stepped = adam_step(model, params)
  return logits(model, params), logits(model, stepped), stepped


def size(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def residual_params(params, num_layers=LAYERS):
  """A variant's params without its connection params, blocks unstacked (scan_layers=False)."""
  out = {}
  for key, value in params.items():
    if key.startswith("connections_") or key == "output_connection":
      continue
    if key == "encoder":
      out[key] = residual_params(value, num_layers)
    elif key == "blocks":  # scanned: [layers, ...] -> blocks_i
      for i in range(num_layers):
        out[f"blocks_{i}"] = residual_params(jax.tree.map(lambda a, i=i: a[i], value))
    elif key.startswith("blocks_"):
      out[key] = {k: v for k, v in value.items() if not k.endswith("_connection")}
    else:
      out[key] = value
  return out


RESIDUAL = Model(tiny_config(num_layers=LAYERS, scan_layers=False))


def check_starts_as_residual(model, params):
  """Equal to the residual model (same params elsewhere) at init, not after one adam step;
  returns the stepped params."""
  start, stepped, new_params = before_and_after_step(model, params)
  ref_start, ref_stepped, _ = before_and_after_step(RESIDUAL, residual_params(params))
  np.testing.assert_allclose(start, ref_start, atol=1e-6)
  assert np.abs(stepped - ref_stepped).max() > 1e-3
  return new_params


@pytest.mark.parametrize("spec", [dict(name="denseformer"),
                                  dict(name="hyper", expansion_rate=1, dynamic=True)],
                         ids=["denseformer", "hyper"])
def test_starts_as_residual_and_differs_after_one_step(spec):
  """Hyper with n = 1 (dynamic: its tanh part is 0 at init, so static is covered too);
  densenet is checked in its own test."""
  check_starts_as_residual(*init(tiny_config(num_layers=LAYERS, connection=spec)))


def encoder_layers(model, params):
  return model.apply({"params": params}, BATCH["tokens"], return_all_layers=True,
                     method=lambda m, *a, **k: m.encoder(*a, **k))


def test_hyper_streams_follow_the_paper_init_and_scan_matches_loop():
  """A = [e_(k mod n) | I], beta = 1 for sub-layer k; all n streams stay equal at step 0, so
  the summed stream is n x the residual stream."""
  n = 4
  config = tiny_config(num_layers=LAYERS, connection=dict(name="hyper", expansion_rate=n))
  model, params = init(config)
  blocks = params["encoder"]["blocks"]
  for layer in range(LAYERS):
    for index, name in enumerate(("attention", "ffn")):
      alpha = blocks[f"{name}_connection"]["static_alpha"][layer]
      np.testing.assert_array_equal(alpha[:, 0], np.eye(n)[(2 * layer + index) % n])
      np.testing.assert_array_equal(alpha[:, 1:], np.eye(n))
      np.testing.assert_array_equal(blocks[f"{name}_connection"]["static_beta"][layer], 1.0)
  loop_params = residual_params(params)
  for i in range(LAYERS):
    loop_params["encoder"][f"blocks_{i}"] = jax.tree.map(lambda a, i=i: a[i], blocks)
  _, _, layers = encoder_layers(model, params)
  _, _, looped = encoder_layers(Model(config.replace(scan_layers=False)), loop_params)
  np.testing.assert_allclose(layers, looped, atol=1e-6)
  _, _, residual_layers = encoder_layers(RESIDUAL, residual_params(params))
  np.testing.assert_allclose(layers[1:], n * residual_layers[1:], rtol=1e-5, atol=1e-6)


def test_scalar_mix_one_hot_on_last_layer_equals_the_last_layer():
  model, params = init(tiny_config(num_layers=LAYERS, connection=dict(name="scalar_mix")))
  mix = params["encoder"]["output_connection"]
  np.testing.assert_array_equal(mix["weights"], np.zeros(LAYERS + 1))  # ELMo: uniform
  params["encoder"]["output_connection"] = {
      "weights": jnp.array([-jnp.inf] * LAYERS + [0.0]), "gamma": jnp.array(1.0)}
  ref_params = {**params, "encoder": {k: v for k, v in params["encoder"].items()
                                      if k != "output_connection"}}
  np.testing.assert_allclose(logits(model, params),
                             logits(Model(tiny_config(num_layers=LAYERS)), ref_params), atol=1e-6)


def test_densenet_parameters_identity_init_and_direct_gradient_path():
  """d^2 * sum_{t=2}^{L+1} min(t, max_inputs) extra parameters; starts as residual. With the
  path through block 2 cut, the loss reaches block 1 only through the concatenation: never for
  residual, and for densenet once its zero-initialised skip projection has moved."""
  def config(**connection):
    return tiny_config(num_layers=LAYERS, connection=dict(name="densenet", **connection))

  def shapes(config):
    return jax.eval_shape(Model(config).init, jax.random.PRNGKey(0), BATCH)["params"]

  for max_inputs in (0, 1, 2):
    expected = 32 ** 2 * sum(min(t, max_inputs or t) for t in range(2, LAYERS + 2))
    assert size(shapes(config(max_inputs=max_inputs))) - size(shapes(RESIDUAL.config)) == expected
  model, params = init(config())
  stepped = check_starts_as_residual(model, params)

  def cut_after_first_block(next_fun, args, kwargs, context):
    if isinstance(context.module, Block) and context.module.name != "blocks_0":
      args = (jax.lax.stop_gradient(args[0]),) + args[1:]
    return next_fun(*args, **kwargs)

  @functools.partial(jax.jit, static_argnums=0)
  def block1_grad(model, params):
    with nn.intercept_methods(cut_after_first_block):
      grads = jax.grad(functools.partial(loss, model))(params)["encoder"]["blocks_0"]
    return jnp.max(jnp.stack([jnp.abs(g).max() for g in jax.tree.leaves(grads)]))

  assert block1_grad(RESIDUAL, residual_params(params)) == 0.0
  assert block1_grad(model, stepped) > 1e-6


# Every connection once (non-default options where it has them; the contract tests run the
# defaults), with GLU and RoPE, and every norm placement; run through the runner.
SPECS = [(dict(name="residual"), "sandwich"),
         (dict(name="scalar_mix"), "post"), (dict(name="denseformer", dilation=2, period=2), "pre"),
         (dict(name="densenet", max_inputs=2), "pre"),
         (dict(name="hyper", expansion_rate=2, dynamic=True), "sandwich")]


def test_specs_cover_every_connection():
  assert {spec["name"] for spec, _ in SPECS} == set(registry.names("connection"))


@pytest.mark.parametrize("name", ["residual", "hyper"])
def test_sandwich_norms_sit_in_the_scanned_blocks(name):
  config = tiny_config(connection=dict(name=name), norm_position="sandwich")
  params = jax.eval_shape(Model(config).init, jax.random.PRNGKey(0), BATCH)["params"]
  blocks = params["encoder"]["blocks"]  # still the nn.scan fast path
  assert {"attention_norm", "attention_out_norm", "ffn_norm", "ffn_out_norm"} <= set(blocks)
  assert "final_norm" in params["encoder"]


def test_return_all_layers_scanned_equals_loop_and_ends_in_the_output():
  scanned, params = init(tiny_config(num_layers=LAYERS))
  out, _, layers = encoder_layers(scanned, params)
  assert layers.shape == (LAYERS + 1, 2, 16, 32)
  _, _, looped = encoder_layers(RESIDUAL, residual_params(params))
  np.testing.assert_allclose(layers, looped, atol=1e-6)
  last = np.asarray(layers[-1])  # the final LayerNorm at init: scale 1, bias 0
  normed = (last - last.mean(-1, keepdims=True)) / np.sqrt(last.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out, normed, atol=1e-4)


@pytest.mark.parametrize("spec, field", [
    (dict(name="denseformer", dilation=0), "model.connection.dilation=0"),
    (dict(name="densenet", max_inputs=-1), "model.connection.max_inputs=-1"),
    (dict(name="hyper", expansion_rate=0), "model.connection.expansion_rate=0")])
def test_bad_options_name_the_field(spec, field):
  model = Model(tiny_config(connection=spec))
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), BATCH)


def test_hyper_refuses_post_norm():
  model = Model(tiny_config(connection=dict(name="hyper"), norm_position="post"))
  with pytest.raises(ConfigError, match="model.norm_position"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), BATCH)


@pytest.mark.slow
@pytest.mark.parametrize("spec, norm_position", SPECS,
                         ids=["-".join(map(str, s.values())) + f"-{n}" for s, n in SPECS])
def test_training_steps_with_glu_and_rope(tmp_path, spec, norm_position):
  """Two train steps and an eval through `train_and_evaluate` (jit, shardings, checkpoints)."""
  config = tiny_listops(tmp_path / "cache", num_steps=2, eval_every=2, checkpoint_every=2)
  config.model.update(num_layers=LAYERS, connection=spec, ffn=dict(name="glu"),
                      position=dict(name="rope"), norm_position=norm_position)
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0
  for record in read_jsonl(tmp_path / "run" / "metrics.jsonl"):
    if record["split"] == "train":
      assert np.isfinite(record["loss"]) and 0.0 < record["grad_norm"] < np.inf
