"""Layer patterns (encoders/patterns.py): equal entries are the uniform model, per-layer options
reach their layer, scanned groups equal the unscanned stack, mistakes are one-line errors."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import patterns
from encoders.config import ModelConfig, resolve_model
from encoders.errors import ConfigError
from encoders.model import Encoder
from encoders.moe import placement, upcycle
from experiments import workdir

LENGTH = 32
LOCAL = dict(name="local", window_tokens=2, block_size=8)
GLOBAL = {"attention": {"name": "dense"}, "position": {"base": 160_000.0}}


def config(num_layers=2, layer_pattern=(), **changes) -> ModelConfig:
  model = dict(vocab_size=LENGTH, max_length=LENGTH, dim=16, num_layers=num_layers, num_heads=2,
               mlp_dim=32, dropout_rate=0.0, attention=LOCAL, position=dict(name="rope"),
               layer_pattern=layer_pattern)
  return ModelConfig.from_dict({**model, **changes})


TOKENS = jnp.arange(LENGTH)[None] % LENGTH


def init(c: ModelConfig):
  return nn.unbox(jax.jit(Encoder(c).init)(jax.random.PRNGKey(0), TOKENS)["params"])


def run(c: ModelConfig, params):
  return jax.jit(Encoder(c).apply)({"params": params}, TOKENS)[0]


@pytest.mark.parametrize("pattern", [
    ({}, {}),
    ({"position": {"base": 10_000.0}, "norm": {"name": "layernorm"}},),
])
def test_equal_entries_are_the_uniform_config(pattern):
  assert config(layer_pattern=pattern) == config()
  assert config(layer_pattern=pattern).layer_pattern == ()


def test_equal_entries_give_bit_identical_params_and_outputs():
  uniform = config()
  patterned = config(layer_pattern=({"attention": {"window_tokens": 2}},
                                    {"attention": dict(LOCAL)}))
  a, b = init(uniform), init(patterned)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))
  np.testing.assert_array_equal(run(uniform, a), run(patterned, b))


def reach(c: ModelConfig, params) -> np.ndarray:
  """|d out[0] / d embedding of token j| per position j (token j sits at position j)."""
  table = params["token_embed"]["embedding"]

  def first_output(table):
    out, _ = Encoder(c).apply({"params": params}, TOKENS, token_embedding=table)
    return out[0, 0].sum()

  return np.abs(np.asarray(jax.jit(jax.grad(first_output))(table))).sum(-1)


def test_a_local_layer_sees_only_its_window_a_global_one_everything():
  # Two local layers with window 2 reach 4 tokens; a global first layer reaches all of them.
  local, hybrid = config(num_layers=2), config(num_layers=2, layer_pattern=(GLOBAL, {}))
  params = init(hybrid)
  blocks = params["blocks"]
  uniform = {**params, "blocks": jax.tree.map(lambda *a: jnp.concatenate(a),
                                              blocks["block_0"], blocks["block_1"])}
  seen = reach(local, uniform)
  assert np.all(seen[:5] > 0) and np.all(seen[5:] == 0)
  assert np.all(reach(hybrid, params) > 0)


def test_rope_base_reaches_its_layer_only():
  a = config(layer_pattern=({"position": {"base": 160_000.0}}, {}))
  b = config(layer_pattern=({"position": {"base": 500.0}}, {}))
  assert patterns.layer_config(a, 0).spec("position")["base"] == 160_000.0
  assert patterns.layer_config(a, 1).spec("position")["base"] == 10_000.0
  params = init(a)
  assert jax.tree.structure(params) == jax.tree.structure(init(b))
  assert not np.allclose(run(a, params), run(b, params))


def test_scanned_groups_equal_the_unscanned_stack():
  pattern = (GLOBAL, {"ffn": {"name": "glu"}, "norm": {"name": "rmsnorm"}})
  scanned = config(num_layers=4, layer_pattern=pattern)
  unscanned = scanned.replace(scan_layers=False)
  params = init(scanned)
  assert set(params["blocks"]) == {"block_0", "block_1"}
  assert params["blocks"]["block_0"]["attention"]["query"]["kernel"].shape[0] == 2
  rest, layers = upcycle.split_layers(params, scanned)
  flat = upcycle.join_layers(rest, layers, unscanned)
  shapes = jax.eval_shape(Encoder(unscanned).init, jax.random.PRNGKey(0), TOKENS)["params"]
  assert jax.tree.structure(flat) == jax.tree.structure(nn.unbox(shapes))
  assert "wi_gate" in flat["blocks_3"]["ffn"] and "rmsnorm" in flat["blocks_3"]["ffn_norm"]
  np.testing.assert_allclose(run(scanned, params), run(unscanned, flat), rtol=1e-5, atol=1e-6)


def test_moe_every_is_a_pattern_and_a_pattern_places_moe():
  every = config(num_layers=4, ffn=dict(name="moe", num_experts=2, every=2))
  assert patterns.period(every) == 2
  assert [placement.is_moe_layer(every, i) for i in range(4)] == [False, True, False, True]
  moe = {"ffn": {"name": "moe", "num_experts": 2}}
  placed = config(num_layers=4, layer_pattern=(moe, {}, {}, {}))
  assert [placement.is_moe_layer(placed, i) for i in range(4)] == [True, False, False, False]
  assert placement.num_moe_layers(patterns.layer_config(placed, 0)) == 1


def test_resolved_pattern_records_full_specs():
  model = dict(vocab_size=8, num_layers=2, attention=LOCAL, position=dict(name="rope"),
               layer_pattern=(GLOBAL, {}))
  resolved = resolve_model(model)
  assert resolved["layer_pattern"][0]["position"] == {"name": "rope", "base": 160_000.0,
                                                      "fraction": 1.0}
  assert resolve_model({**model, "layer_pattern": resolved["layer_pattern"]}) == resolved


@pytest.mark.parametrize("changes, message", [
    (dict(layer_pattern=({}, {}, {})),
     "model.layer_pattern has 3 entries, which must divide model.num_layers=2"),
    (dict(layer_pattern=({"head": {"name": "mlm"}},)),
     "model.layer_pattern[0].head is not a per-layer kind; allowed: attention, position, norm, "
     "ffn"),
    (dict(layer_pattern=({}, {"attention": {"windw": 1}})),
     "model.layer_pattern[1]: model.attention.windw is not an option of attention 'local'"),
    (dict(layer_pattern=({"attention": {"name": "sparse"}},)),
     "model.layer_pattern[0]: model.attention.name='sparse' is not a registered attention"),
    (dict(layer_pattern=({"position": {"name": "learned"}},)),
     "model.layer_pattern[0]: model.position.name='learned' acts once on the embeddings"),
    (dict(layer_pattern=({"attention": "dense"},)),
     "model.layer_pattern[0].attention='dense' must be a dict of options"),
    (dict(layer_pattern=({}, {}), num_layers=4, ffn=dict(name="moe", every=3)),
     "model.ffn.every=3 must divide model.num_layers=4"),
])
def test_mistakes_are_one_line_errors_before_anything_is_built(changes, message):
  with pytest.raises(ConfigError) as error:
    config(**changes)
  assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_scanned_program_grows_with_the_group_not_the_depth():
  """Scanned over repeats of the group, the program XLA compiles for depth 24 is the one of
  depth 4 (the same scan body; only the repeat count and stacked shapes differ), so compile
  time does not grow with depth (measured: docs/benchmarks.md, not asserted on a clock)."""

  def program_size(depth: int, scan: bool = True) -> int:
    c = config(num_layers=depth, layer_pattern=(GLOBAL, {}), scan_layers=scan)
    params = jax.eval_shape(lambda: init(c))

    def loss(params):
      return jnp.mean(Encoder(c).apply({"params": params}, TOKENS)[0] ** 2)

    return len(jax.jit(jax.grad(loss)).lower(params).as_text())

  shallow, deep = program_size(4), program_size(24)
  assert abs(deep - shallow) < 0.02 * shallow, (shallow, deep)
  assert program_size(8, scan=False) > 1.5 * program_size(4, scan=False)  # unrolled: it grows


def test_workdir_names_pattern_fields_and_lets_their_kernels_change_on_resume():
  model = dict(vocab_size=8, num_layers=2, attention=LOCAL, position=dict(name="rope"))
  old = {"model": resolve_model({**model, "layer_pattern": (GLOBAL, {})})}
  kernel = {"model": resolve_model({**model, "layer_pattern": (
      {**GLOBAL, "attention": {"name": "dense", "implementation": "xla"}}, {})})}
  base = {"model": resolve_model({**model, "layer_pattern": (
      {**GLOBAL, "position": {"base": 20_000.0}}, {})})}
  as_json = lambda record: json.loads(json.dumps(record))  # noqa: E731  (tuples -> lists)
  assert workdir.differences(as_json(old), as_json(kernel)) == []
  assert workdir.differences(as_json(old), as_json(base)) == [
      "model.layer_pattern[0].position.base: 160000.0 -> 20000.0"]


def test_pattern_is_a_command_line_override():
  """`--config.model.layer_pattern=(...)` takes a Python literal, as experiments.main parses it."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = ["main", "--config=configs/modernbert.py:tiny",
          '--config.model.layer_pattern=({"attention": {"name": "dense"}}, {}, '
          '{"attention": {"window_tokens": 16}})']
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  values(argv)
  pattern = resolve_model(values.config.model.to_dict())["layer_pattern"]
  assert pattern[0]["attention"]["name"] == "dense" and pattern[1] == {}
  assert pattern[2]["attention"]["name"] == "local"
  assert pattern[2]["attention"]["window_tokens"] == 16


@pytest.mark.slow
def test_modernbert_tiny_trains_on_the_offline_corpus(tmp_path):
  from configs import modernbert  # pylint: disable=import-outside-toplevel
  from experiments.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = modernbert.get_config("tiny")
  config.data.cache_dir = str(tmp_path / "cache")
  config.data.text.update(max_bytes=1_000_000, eval_fraction=0.2, seq_len=128,
                          max_eval_examples=32)
  config.train.update(batch_size=8, num_steps=4, warmup_steps=1, log_every=1, eval_every=4,
                      checkpoint_every=4, async_checkpoints=False)
  config.progress_bar = False
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  assert np.isfinite(metrics["loss"]) and metrics["loss"] < np.log(260) + 0.5
