"""ModernBERT's pieces (Warner et al. 2024): the identity norm and no norm before layer 0's
attention, its init, dropout on the attention output only, StableAdamW's decay decoupled from
the learning rate (against a NumPy copy of optimi's update), the presets' sizes against
transformers' ModernBERT, and runs recorded before these fields resuming."""

from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from encoders import patterns
from encoders.config import ModelConfig, resolve_model
from encoders.errors import ConfigError
from encoders.model import Model
from encoders.norms import Identity
from experiments import optim, workdir

TOKENS = np.array([[1, 5, 9, 4, 7, 3, 0, 0], [1, 8, 2, 6, 0, 0, 0, 0]], np.int32)
BATCH = {"tokens": TOKENS, "mask": TOKENS > 0}


def _config(**changes) -> ModelConfig:
  base = dict(vocab_size=12, max_length=8, dim=16, num_layers=3, num_heads=2, mlp_dim=24,
              dropout_rate=0.0, norm_position="pre", embed_norm=True, use_bias=False,
              position=dict(name="rope"), ffn=dict(name="glu"),
              norm=dict(name="layernorm", use_bias=False), head=dict(name="embedding"))
  return ModelConfig(**{**base, **changes})


def _init(c: ModelConfig, seed: int = 0):
  return jax.jit(lambda: nn.unbox(Model(c).init(jax.random.PRNGKey(seed), BATCH)["params"]))()


@functools.lru_cache(maxsize=None)
def _compiled(c: ModelConfig, deterministic: bool = True):
  """One compiled forward per config (params and dropout key are arguments)."""
  return jax.jit(lambda p, key: Model(c).apply({"params": p}, BATCH, rngs={"dropout": key},
                                               deterministic=deterministic)[0])


def _apply(c: ModelConfig, params, deterministic: bool = True):
  return np.asarray(_compiled(c, deterministic)(params, jax.random.PRNGKey(5)))


def test_identity_norm_returns_its_input_and_has_no_parameters():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 16)) * 5 + 2
  variables = Identity(_config()).init(jax.random.PRNGKey(0), x)
  assert variables == {}
  np.testing.assert_array_equal(Identity(_config()).apply(variables, x), x)


def _scale_attention_norm(params, layer: int, scanned: bool):
  """`params` with block `layer`'s attention norm scale tripled."""
  params = jax.tree.map(np.array, params)
  if scanned:
    params["encoder"]["blocks"]["attention_norm"]["layernorm"]["scale"][layer] *= 3.0
  else:
    params["encoder"][f"blocks_{layer}"]["attention_norm"]["layernorm"]["scale"] *= 3.0
  return params


@pytest.mark.parametrize("scanned", [True, False])
def test_skip_first_prenorm_ignores_layer_0_attention_norm_only(scanned):
  """Layer 0's attention norm parameters no longer change the output (scanned or unrolled,
  one layout); layer 1's still do; without the option layer 0's do."""
  skip = _config(skip_first_prenorm=True, scan_layers=scanned)
  params = _init(skip)
  out = _apply(skip, params)
  np.testing.assert_array_equal(_apply(skip, _scale_attention_norm(params, 0, scanned)), out)
  assert np.abs(_apply(skip, _scale_attention_norm(params, 1, scanned)) - out).max() > 1e-3
  with_norm = skip.replace(skip_first_prenorm=False)
  assert np.abs(_apply(with_norm, _scale_attention_norm(params, 0, scanned)) - out).max() > 1e-3
  with pytest.raises(ConfigError, match="skip_first_prenorm=True needs"):
    _config(skip_first_prenorm=True, norm_position="post")


@pytest.mark.slow
def test_modernbert_init_is_truncated_and_scales_output_projections():
  c = _config(dim=64, mlp_dim=128, num_heads=4, num_layers=6, init_method="modernbert",
              head=dict(name="mlm", transform_bias=False))
  params = _init(c, seed=3)
  blocks = params["encoder"]["blocks"]
  std, cutoff, layers = 0.02, 2.0, 6
  out_std = std / np.sqrt(2 * layers)
  ins = np.concatenate([np.ravel(blocks["attention"][n]["kernel"])
                        for n in ("query", "key", "value")] +
                       [np.ravel(blocks["ffn"][n]["kernel"]) for n in ("wi_gate", "wi_up")])
  outs = np.concatenate([np.ravel(blocks["attention"]["out"]["kernel"]),
                         np.ravel(blocks["ffn"]["wo"]["kernel"])])
  truncated = 0.8796  # std of N(0, 1) restricted to [-2, 2], torch's trunc_normal_
  assert np.abs(ins).max() <= cutoff * std and np.abs(outs).max() <= cutoff * out_std
  np.testing.assert_allclose(ins.std(), truncated * std, rtol=0.03)
  np.testing.assert_allclose(outs.std(), truncated * out_std, rtol=0.03)
  assert np.abs(params["head"]["transform"]["kernel"]).max() <= cutoff * out_std
  assert "bias" not in params["head"]["transform"] and "bias" in params["head"]
  normal = _init(c.replace(init_method="normal"), seed=3)
  assert np.abs(normal["encoder"]["blocks"]["ffn"]["wo"]["kernel"]).max() > cutoff * std
  with pytest.raises(ConfigError, match="model.init_method='xavier'; allowed: normal, modernbert"):
    _config(init_method="xavier")


@pytest.mark.slow
def test_attention_output_dropout_drops_the_attention_branch_only():
  c = _config(attention_output_dropout_rate=0.5)
  params = _init(c)
  clean = _apply(c, params)
  assert np.abs(_apply(c, params, deterministic=False) - clean).max() > 1e-3
  ffn_only = c.replace(attention_output_dropout_rate=0.0, dropout_rate=0.5)
  assert np.abs(_apply(ffn_only, params, deterministic=False) - clean).max() > 1e-3
  none = c.replace(attention_output_dropout_rate=0.0)
  np.testing.assert_array_equal(_apply(none, params, deterministic=False), clean)
  unset = c.replace(attention_output_dropout_rate=None, dropout_rate=0.3)
  assert unset.attention_output_dropout == 0.3  # unset: the residual dropout, as before


def _optimi_stable_adamw(params, grads_seq, lrs, max_lr, b1, b2, eps, wd):
  """optimi's StableAdamW with decouple_lr (`_foreach_stableadamw`, debiased betas)."""
  p, m, v = params.copy(), np.zeros_like(params), np.zeros_like(params)
  for step, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
    debias = lambda beta, t: (beta**t - beta) / (beta**t - 1)  # noqa: E731
    b1_comp, b2_hat = 1 - debias(b1, step), debias(b2, step)
    m = m + b1_comp * (g - m)
    v = v * b2_hat + (1 - b2_hat) * g * g
    lr_clipped = lr / max(1.0, np.sqrt(np.mean(g * g / np.maximum(v, eps * eps))))
    p = p * (1 - lr_clipped / max_lr * wd)
    p = p - lr_clipped * m / (np.sqrt(v) + eps)
  return p


def test_decoupled_decay_matches_optimi_stable_adamw():
  t = ml_collections.ConfigDict(dict(
      optimizer="stable_adamw", schedule="wsd", decay_fraction=0.5, learning_rate=8e-4,
      warmup_steps=2, num_steps=8, end_lr_fraction=0.0, weight_decay=0.5, b1=0.9, b2=0.98,
      eps=1e-6, grad_clip_norm=0.0, weight_decay_scale="schedule"))
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal((6, 5)).astype(np.float64)
  grads = [rng.standard_normal((6, 5)) * (10.0 if i == 4 else 1.0) for i in range(8)]  # a spike
  tx, schedule = optim.make_optimizer(t)
  params = {"kernel": jnp.asarray(kernel, jnp.float32)}
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update({"kernel": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
  lrs = [float(schedule(i)) for i in range(8)]
  want = _optimi_stable_adamw(kernel, grads, lrs, 8e-4, 0.9, 0.98, 1e-6, 0.5)
  np.testing.assert_allclose(np.asarray(params["kernel"]), want, rtol=0, atol=2e-6)
  lr_scaled = _optimi_stable_adamw(kernel, grads, lrs, 1.0, 0.9, 0.98, 1e-6, 0.5)
  assert np.abs(want - lr_scaled).max() > 1e-3  # the two scales differ measurably
  with pytest.raises(ConfigError, match="weight_decay_scale='lr_max'; allowed: lr, schedule"):
    optim.make_optimizer(ml_collections.ConfigDict({**t.to_dict(),
                                                    "weight_decay_scale": "lr_max"}))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["base", "large"])
def test_presets_have_modernberts_parameter_count_and_phase_thetas(preset):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from configs import modernbert  # pylint: disable=import-outside-toplevel
  config = modernbert.get_config(preset)
  model = ModelConfig.from_dict({**resolve_model(config.model.to_dict()), "vocab_size": 50368,
                                 "max_length": 8192, "scan_layers": False})
  shapes = jax.eval_shape(lambda: Model(model).init(jax.random.PRNGKey(0), BATCH)["params"])
  ours = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.unbox(shapes)))
  hf = transformers.ModernBertConfig(
      hidden_size=model.dim, intermediate_size=model.mlp_dim, num_hidden_layers=model.num_layers,
      num_attention_heads=model.num_heads)
  with torch.device("meta"):
    reference = transformers.ModernBertForMaskedLM(hf)
  theirs = sum(p.numel() for n, p in reference.named_parameters() if n != "decoder.weight")
  assert ours - model.dim == theirs  # ours also keeps layer 0's unused attention norm scale
  assert {patterns.layer_config(model, i).spec("position")["base"] for i in (0, 1)} == {1e4}
  long = modernbert.get_config(f"{preset}_long").model.layer_pattern
  assert long[0]["position"]["base"] == 160_000.0 and "position" not in long[1]


def test_runs_recorded_before_the_new_fields_resume():
  """A config.json without the fields added for ModernBERT reads them as their defaults."""
  from configs import mlm  # pylint: disable=import-outside-toplevel
  config = mlm.get_config("tiny")
  new = workdir.resolved(json.loads(config.to_json_best_effort()))
  old = json.loads(json.dumps(new))
  for field in workdir.ADDED_FIELDS:
    section, name = field.split(".")
    del old[section][name]
  assert workdir.differences(workdir.resolved(old), new) == []
  old["model"]["skip_first_prenorm"] = True  # a recorded value still counts
  assert workdir.differences(old, new) == ["model.skip_first_prenorm: True -> False"]
