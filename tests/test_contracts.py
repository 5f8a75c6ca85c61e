"""Contract tests, parametrised over every registry entry: swapping one variant into a tiny
model must keep shapes, respect padding and segments, jit, give finite gradients, and be
deterministic. A new variant is covered as soon as it is registered."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import registry
from encoders.errors import ConfigError
from encoders.model import Model
from tests.conftest import tiny_config

B, L = 2, 16
VARIANTS = [(kind, name) for kind in registry.KINDS for name in registry.names(kind)]


def variant_config(kind: str, name: str, **overrides):
  spec = {"name": name}
  if kind == "head" and name in ("classification", "lra_classification", "pair_classification"):
    spec["num_classes"] = 5
  return tiny_config(**{kind: spec, **overrides})


def make_batch(seed: int = 0, pad_from: int = 11):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, 37, size=(B, L)).astype(np.int32)
  mask = np.ones((B, L), bool)
  mask[1, pad_from:] = False
  tokens[~mask] = 0
  return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def make_hidden(model: Model):
  """Jitted encoder hidden states (masking and packing are tested on these)."""

  @jax.jit
  def hidden(params, inputs):
    return model.apply({"params": params}, inputs["tokens"], mask=inputs.get("mask"),
                       segment_ids=inputs.get("segment_ids"),
                       positions=inputs.get("positions"),
                       method=lambda m, *a, **k: m.encoder(*a, **k)[0])

  return lambda config, params, inputs: hidden(params, inputs)


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"{k}-{n}" for k, n in VARIANTS])
def variant(request):
  kind, name = request.param
  config = variant_config(kind, name)
  model = Model(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), make_batch())["params"]
  return kind, name, config, model, params, make_hidden(model)


def test_output_shapes(variant):
  kind, name, config, model, params, hidden = variant
  out, aux = jax.jit(model.apply)({"params": params}, make_batch())
  head = config.spec("head")["name"]
  expected = {"classification": (B, 5), "lra_classification": (B, 5),
              "pair_classification": (B // 2, 5),
              "embedding": (B, config.dim),
              "embedding_layers": (B, config.dim), "rtd": (B, L)}.get(
                  head, (B, L, config.vocab_size))
  assert out.shape == expected
  assert isinstance(aux, dict)
  assert hidden(config, params, make_batch()).shape == (B, L, config.dim)


def test_padding_does_not_change_real_positions(variant):
  _, _, config, _, params, hidden = variant
  a = make_batch()
  b = dict(a)
  noisy = np.array(a["tokens"])
  noisy[1, 11:] = np.arange(5) + 20  # different ids under the padding mask
  b["tokens"] = jnp.asarray(noisy)
  ha, hb = hidden(config, params, a), hidden(config, params, b)
  np.testing.assert_allclose(ha[1, :11], hb[1, :11], atol=1e-5)
  np.testing.assert_allclose(ha[0], hb[0], atol=1e-5)


def test_packed_segments_match_separate_sequences(variant):
  """Two sequences packed in one row (segment ids, restarting positions) give the same hidden
  states as each run alone (Krell et al., packing without cross-contamination)."""
  kind, name, config, model, params, hidden = variant
  if not config.variant_class("attention").supports_segments:
    pytest.skip("this attention variant mixes the whole length; it rejects segment_ids")
  packed, parts = packed_pair()
  try:
    together = hidden(config, params, packed)
  except ConfigError as refusal:  # an option that cannot hold under packing, named in one line
    field = re.match(r"model\.attention\.(\w+)=", str(refusal))
    assert field and "packed" in str(refusal), str(refusal)
    config = variant_config(kind, name, attention={**config.spec("attention"),
                                                   field.group(1): ()})
    model = Model(config)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), make_batch())["params"]
    hidden = make_hidden(model)
    together = hidden(config, params, packed)
  for seq, sl in parts:
    alone = hidden(config, params, {"tokens": jnp.asarray(seq[None], jnp.int32),
                                    "mask": jnp.ones((1, len(seq)), bool)})
    np.testing.assert_allclose(together[0, sl], alone[0], atol=1e-5)


def packed_pair():
  """A row packing two sequences, and each sequence with its slice of the row."""
  rng = np.random.default_rng(3)
  first, second = rng.integers(4, 37, 9), rng.integers(4, 37, 7)
  packed = {"tokens": jnp.asarray(np.concatenate([first, second])[None], jnp.int32),
            "mask": jnp.ones((1, L), bool),
            "segment_ids": jnp.asarray([[1] * 9 + [2] * 7]),
            "positions": jnp.asarray([list(range(9)) + list(range(7))])}
  return packed, ((first, slice(0, 9)), (second, slice(9, 16)))


def test_jit_matches_eager(variant):
  _, _, _, model, params, _ = variant
  batch = make_batch()
  eager, _ = model.apply({"params": params}, batch)
  jitted, _ = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, batch)
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)


def test_gradients_finite_and_reach_every_parameter(variant):
  _, _, _, model, params, _ = variant
  batch = make_batch()

  def loss(p):
    out, _ = model.apply({"params": p}, batch, deterministic=False,
                         rngs={"dropout": jax.random.PRNGKey(1)})
    return jnp.mean(out.astype(jnp.float32) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert leaves
  for path, g in leaves:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
    assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_deterministic_for_fixed_seed(variant):
  _, _, config, model, params, _ = variant
  batch = make_batch()
  params_again = jax.jit(Model(config).init)(jax.random.PRNGKey(0), batch)["params"]
  jax.tree.map(np.testing.assert_array_equal, params, params_again)
  dropout_config = config.replace(dropout_rate=0.2, attention_dropout_rate=0.2)
  dropout_model = Model(dropout_config)
  apply = jax.jit(lambda p, x, rng: dropout_model.apply(
      {"params": p}, x, deterministic=False, rngs={"dropout": rng})[0])

  def run(seed):
    return apply(params, batch, jax.random.PRNGKey(seed))

  np.testing.assert_array_equal(run(7), run(7))
  assert not np.allclose(run(7), run(8))
