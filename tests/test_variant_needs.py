"""What variants ask of the runner (encoders/needs.py): per-parameter learning rates and decay
over the expanded layer pattern, aux losses, packing; and the mixers' reference inits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from encoders import needs
from encoders.errors import ConfigError
from encoders.mixers import ssm
from encoders.model import Model
from experiments import optim
from tests.conftest import tiny_config

SSM_LEAVES = {"log_dt", "log_a_real", "a_imag"}
TRAIN = dict(learning_rate=1e-2, warmup_steps=0, num_steps=10, schedule="constant",
             end_lr_fraction=0.0, weight_decay=0.0, b1=0.9, b2=0.98, eps=1e-9,
             grad_clip_norm=0.0)


def param_shapes(config):
  inputs = {"tokens": jnp.ones((1, 8), jnp.int32)}
  return nn.unbox(jax.eval_shape(lambda: Model(config).init(jax.random.key(0), inputs)))


def flat(tree):
  return {"/".join(optim.dict_keys(path)): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("scan_layers", [True, False])
def test_hybrid_pattern_applies_the_ssm_rate_to_exactly_its_s4d_layers(scan_layers):
  """Dense base + `s4d` every second layer: one AdamW step moves those layers' dt and A by
  min(lr, 1e-3) (S4's rule, s4d's default) and every other parameter by lr (the base spec
  alone would give them lr too)."""
  config = tiny_config(num_layers=4, scan_layers=scan_layers, dim=8, num_heads=2, mlp_dim=8,
                       vocab_size=11, layer_pattern=({}, {"attention": {"name": "s4d",
                                                                        "state_size": 2}}))
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), param_shapes(config))["params"]
  optimizer, _ = optim.make_optimizer(ml_collections.ConfigDict(TRAIN), needs.model_needs(config))
  updates, _ = jax.jit(optimizer.update)(jax.tree.map(lambda p: -p, params),
                                         optimizer.init(params), params)
  slow = {path for path, u in flat(updates).items() if np.allclose(u, 1e-3, rtol=1e-4)}
  fast = {path for path, u in flat(updates).items() if np.allclose(u, 1e-2, rtol=1e-4)}
  layers = ["encoder/blocks/block_1"] if scan_layers else ["encoder/blocks_1", "encoder/blocks_3"]
  assert slow == {f"{layer}/attention/{leaf}" for layer in layers for leaf in SSM_LEAVES}
  assert fast == set(flat(updates)) - slow


def test_learning_rate_rules_follow_s4_and_s5():
  """ratio: value x lr; cap (S4): min(lr, value); absolute (S5's ssm_lr_base): value."""
  assert needs.LearningRate("ratio", 0.1).multiplier(5e-3) == 0.1
  assert needs.LearningRate("cap", 1e-3).multiplier(1e-2) == pytest.approx(0.1)
  assert needs.LearningRate("cap", 1e-3).multiplier(5e-4) == 1.0
  assert needs.LearningRate("absolute", 1e-3).multiplier(4e-3) == pytest.approx(0.25)
  assert needs.LearningRate("absolute", 1e-3).multiplier(5e-4) == pytest.approx(2.0)
  config = tiny_config(attention=dict(name="s5", lr_rule="absolute", ssm_lr=2e-3))
  group = needs.model_needs(config).group_of(("encoder", "blocks", "attention", "b_tilde"))
  assert group.learning_rate.multiplier(1e-2) == pytest.approx(0.2) and group.decay is False
  with pytest.raises(ConfigError, match="model.attention.lr_rule='slow'; allowed"):
    needs.model_needs(tiny_config(attention=dict(name="s4d", lr_rule="slow")))


@pytest.mark.parametrize("name, decayed, undecayed", [
    ("s4d", {"c", "d", "out/kernel"}, {"log_dt", "log_a_real", "a_imag", "out/bias"}),
    ("s5", {"c_forward", "c_backward", "d", "out/kernel"},
     {"lambda_re", "lambda_im", "b_tilde", "log_dt"}),
    ("mamba", {"forward/conv_kernel", "backward/x_proj/kernel", "in_proj/kernel"},
     {"forward/a_log", "backward/d", "forward/conv_bias", "forward/dt_proj/bias"}),
    ("hyena", {"in_proj/kernel", "out_proj/kernel"},
     {"filter/dense_0/kernel", "filter/out/kernel", "filter/freq", "short_bias"}),
])
def test_weight_decay_follows_each_reference(name, decayed, undecayed):
  """S4D/S5 decay C and D, Mamba its convolution taps but not A_log and D, Hyena nothing in its
  implicit filter (safari: wd 0); every parameter of the mixer is in one of the two sets."""
  config = tiny_config(attention=dict(name=name), position=dict(name="learned"))
  model_needs = needs.model_needs(config)
  leaves = {path.split("encoder/blocks/attention/")[1]
            for path in flat(param_shapes(config)["params"]) if "/attention/" in path}
  assert decayed | undecayed <= leaves
  assert {leaf for leaf in leaves
          if model_needs.decays(("encoder", "blocks", "attention", *leaf.split("/")))} >= decayed
  for leaf in undecayed:
    assert not model_needs.decays(("encoder", "blocks", "attention", *leaf.split("/"))), leaf
  assert needs.model_needs(tiny_config()).decays(("encoder", "blocks", "ffn", "wi", "kernel"))


def test_aux_losses_and_packing_are_collected_over_the_pattern():
  """An MoE every second block declares its losses; a linformer layer in the pattern forbids
  packing and a linear-attention layer caps the segments, though the base is dense."""
  moe = tiny_config(ffn=dict(name="moe", num_experts=2, every=2))
  assert needs.model_needs(moe).aux_losses == ("load_balance_loss", "router_z_loss")
  assert needs.model_needs(tiny_config()).aux_losses == ()
  assert set(needs.declared_aux_losses()) == {"load_balance_loss", "router_z_loss"}
  hybrid = tiny_config(max_length=16, layer_pattern=({}, {"attention": {"name": "linformer"}}))
  assert not needs.model_needs(hybrid).segments.supported
  capped = tiny_config(layer_pattern=({}, {"attention": {"name": "linear", "max_segments": 4}}))
  assert needs.model_needs(capped).segments == needs.Segments(True, 4, "linear")
  with pytest.raises(ConfigError, match="token mixer 's4d' has none of .layer 1"):
    needs.model_needs(tiny_config(position=dict(name="rope"),
                                  layer_pattern=({}, {"attention": {"name": "s4d"}})))


def build_mixer(name, dim=64, num_layers=4, **options):
  config = tiny_config(attention=dict(name=name, **options), dim=dim, num_heads=4,
                       num_layers=num_layers, max_length=16, dropout_rate=0.5)
  module = config.build("attention")
  params = nn.unbox(jax.jit(module.init)(jax.random.key(1), jnp.zeros((1, 16, dim))))["params"]
  return module, params


def assert_uniform(w, bound):
  """w ~ U(-bound, bound): inside the bound, std bound / sqrt(3) (within sampling error)."""
  w = np.asarray(w)
  assert np.abs(w).max() <= bound * (1 + 1e-6)
  np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.1)


def test_mamba_projections_init_as_the_reference():
  """torch nn.Linear's U(+-1/sqrt(fan_in)) for in_proj and x_proj; out_proj's divided by
  sqrt(n_layer) (mamba's `_init_weights`, rescale_prenorm_residual)."""
  _, params = build_mixer("mamba", expand=2, state_size=4)
  dim, inner = 64, 128
  assert_uniform(params["in_proj"]["kernel"], dim ** -0.5)
  assert_uniform(params["forward"]["x_proj"]["kernel"], inner ** -0.5)
  assert_uniform(params["out_proj"]["kernel"], inner ** -0.5 / 2.0)  # sqrt(4 layers)


def test_s4d_and_s5_output_projections_init_as_the_references():
  """S4D's output_linear (a torch 1x1 Conv1d): U(+-1/sqrt(channels)) kernel and bias; S5's
  out2 (a flax nn.Dense): lecun normal kernel (std 1/sqrt(fan_in)), zero bias."""
  _, s4d = build_mixer("s4d", state_size=4)
  assert_uniform(s4d["out"]["kernel"], 64 ** -0.5)
  assert np.abs(np.asarray(s4d["out"]["bias"])).max() <= 64 ** -0.5
  _, s5 = build_mixer("s5", state_size=4)
  np.testing.assert_allclose(np.asarray(s5["out"]["kernel"]).std(), 64 ** -0.5, rtol=0.1)
  assert not np.asarray(s5["out"]["bias"]).any()


@pytest.mark.parametrize("name", ["s4d", pytest.param("s5", marks=pytest.mark.slow)])
def test_s4d_and_s5_drop_one_mask_per_channel_after_the_gelu(name):
  """Training at dropout 0.5 changes the output; evaluation does not drop; the mask is shared
  by every position of a row (S4's DropoutNd tie=True, S5's broadcast_dims over the length)."""
  module, params = build_mixer(name, dim=16, state_size=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16)), jnp.float32)
  run = jax.jit(lambda det: module.apply({"params": params}, x, deterministic=det,
                                         rngs={"dropout": jax.random.key(2)}), static_argnums=0)
  assert not np.allclose(run(False), run(True))
  np.testing.assert_allclose(run(True), jax.jit(module.apply)({"params": params}, x), atol=1e-6)
  config = tiny_config(dropout_rate=0.5)

  class Drop(nn.Module):
    @nn.compact
    def __call__(self, y):
      return ssm.tied_dropout(config, y, deterministic=False)

  kept = np.asarray(Drop().apply({}, jnp.ones((2, 16, 16)), rngs={"dropout": jax.random.key(3)}))
  assert (kept == kept[:, :1]).all() and 0 < (kept == 0).mean() < 1
