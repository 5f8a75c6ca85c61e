"""Checkpoint parity with transformers, offline: each family's model built from a small random
config (ModernBERT, BERT, RoBERTa, XLM-R, ELECTRA discriminator and generator), converted to
ours and compared on a padded batch (hidden states and head logits within 1e-5, float32), then
exported and loaded back by transformers (no weight newly initialised, same outputs). A
deliberately wrong mapping fails the same comparison."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from encoders import convert
from encoders.config import ModelConfig
from encoders.convert import modernbert as modernbert_family
from encoders.convert.tensors import Tensor
from encoders.errors import ConfigError
from encoders.model import Encoder, Model
from experiments import pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def _modernbert(layers=6):
  return transformers.ModernBertConfig(
      vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
      num_attention_heads=4, max_position_embeddings=64, local_attention=8,
      global_attn_every_n_layers=3, global_rope_theta=160_000.0, local_rope_theta=10_000.0,
      pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
      attn_implementation="eager")


# name -> (HF config factory, task model class name, our head spec, padding id)
CASES = {
    "modernbert": (_modernbert, "ModernBertForMaskedLM",
                   dict(name="mlm", transform_bias=False), 0),
    "bert": (lambda: transformers.BertConfig(**COMMON), "BertForMaskedLM", dict(name="mlm"), 0),
    "roberta": (lambda: transformers.RobertaConfig(**COMMON, type_vocab_size=1, pad_token_id=1),
                "RobertaForMaskedLM", dict(name="mlm"), 1),
    "xlm-roberta": (lambda: transformers.XLMRobertaConfig(**COMMON, type_vocab_size=1,
                                                          pad_token_id=1),
                    "XLMRobertaForMaskedLM", dict(name="mlm"), 1),
    "electra-discriminator": (lambda: transformers.ElectraConfig(**COMMON, embedding_size=16),
                              "ElectraForPreTraining", dict(name="rtd"), 0),
    "electra-generator": (lambda: transformers.ElectraConfig(**COMMON, embedding_size=16),
                          "ElectraForMaskedLM", dict(name="mlm"), 0),
}
FAST = ("modernbert",)  # the others run with -m slow


def _reference(name: str, seed: int = 0):
  """(HF task model with random non-trivial weights, its config)."""
  make, task, _, _ = CASES[name]
  if not hasattr(transformers, task):
    pytest.skip(f"transformers {transformers.__version__} has no {task} (ModernBERT: >= 4.48)")
  torch.manual_seed(seed)
  hf = make()
  model = getattr(transformers, task)(hf).eval()
  with torch.no_grad():  # move norms and biases off their init (1, 0) too
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model, hf


def _batch(pad: int):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 64, (3, 20)).astype(np.int32)
  mask = np.ones((3, 20), bool)
  mask[1, 12:] = mask[2, 5:] = False  # padding of two lengths
  tokens[~mask] = pad
  return tokens, mask


def _run_hf(model, tokens, mask):
  with torch.no_grad():
    ids, attention = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    logits = model(input_ids=ids, attention_mask=attention).logits.numpy()
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state.numpy()
  return hidden, logits


def _ours(name, model, hf, scan_layers=True):
  """(our config, params) converted from the transformers model."""
  model_dict = convert.model_dict_from_hf(hf.to_dict())
  config = ModelConfig.from_dict({**model_dict, "head": CASES[name][2],
                                  "scan_layers": scan_layers})
  weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  encoder, head = convert.from_hf(weights, config, model_type=hf.model_type)
  return config, {"encoder": encoder, "head": convert.head_from_hf(head, config, hf.model_type)}


def _run_ours(config, params, tokens, mask):
  """(final hidden states, head logits) of our model, one compiled call."""

  def run(params):
    inputs = {"tokens": tokens, "mask": mask}
    hidden = Encoder(config).apply({"params": params["encoder"]}, tokens, mask=mask)[0]
    return hidden, Model(config).apply({"params": params}, inputs)[0]

  return tuple(np.asarray(a) for a in jax.jit(run)(params))


def _max_error(a, b, mask):
  return float(np.abs(a - b)[mask].max())


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CASES])
def test_import_and_export_match_transformers(name, tmp_path):
  model, hf = _reference(name)
  tokens, mask = _batch(CASES[name][3])
  hf_hidden, hf_logits = _run_hf(model, tokens, mask)
  config, params = _ours(name, model, hf)
  hidden, logits = _run_ours(config, params, tokens, mask)
  assert _max_error(hidden, hf_hidden, mask) <= TOL
  assert _max_error(logits, hf_logits, mask) <= TOL

  path = pretrained.export(tmp_path / "export", config, params["encoder"],
                           head_params=params["head"], model_type=hf.model_type)
  task, info = getattr(transformers, CASES[name][1]).from_pretrained(
      str(path), output_loading_info=True)
  assert info["missing_keys"] == [] and info["mismatched_keys"] == [], info
  assert all(".pooler." in k for k in info["unexpected_keys"])  # BERT's: AutoModel's only
  _, info = transformers.AutoModel.from_pretrained(str(path), output_loading_info=True)
  assert info["missing_keys"] == [] and info["mismatched_keys"] == [], info
  again_hidden, again_logits = _run_hf(task.eval(), tokens, mask)
  assert _max_error(again_hidden, hidden, mask) <= TOL
  assert _max_error(again_logits, logits, mask) <= TOL


@pytest.mark.slow
def test_unrolled_modernbert_of_a_depth_the_pattern_does_not_divide():
  """22-layer-like case: 4 layers, global every 3: the pattern lists the whole depth."""
  model, hf = _reference("modernbert")
  hf.num_hidden_layers = 4
  model = transformers.ModernBertForMaskedLM(hf).eval()
  tokens, mask = _batch(0)
  _, hf_logits = _run_hf(model, tokens, mask)
  for scan in (True, False):
    config, params = _ours("modernbert", model, hf, scan_layers=scan)
    assert len(config.layer_pattern) == 4
    assert _max_error(_run_ours(config, params, tokens, mask)[1], hf_logits, mask) <= TOL


def test_wrong_mappings_fail_the_comparison(monkeypatch):
  """Swapping the GLU halves, or keeping layer 0's attention norm, breaks parity far beyond
  the tolerance: the comparison can fail."""
  model, hf = _reference("modernbert")
  tokens, mask = _batch(0)
  _, hf_logits = _run_hf(model, tokens, mask)
  config, params = _ours("modernbert", model, hf)
  with_norm = config.replace(skip_first_prenorm=False)
  assert _max_error(_run_ours(with_norm, params, tokens, mask)[1], hf_logits, mask) > 100 * TOL

  right = modernbert_family.encoder_table

  def swapped_glu(c, model_type="modernbert"):
    return [Tensor(t.hf, t.ours[::-1], t.kind) if ".mlp.Wi." in t.hf else t
            for t in right(c, model_type)]

  monkeypatch.setattr(modernbert_family, "encoder_table", swapped_glu)
  config, params = _ours("modernbert", model, hf)
  assert _max_error(_run_ours(config, params, tokens, mask)[1], hf_logits, mask) > 100 * TOL


def test_bad_checkpoints_are_one_line_errors_naming_the_tensor(tmp_path):
  model, hf = _reference("modernbert")
  weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  config, params = _ours("modernbert", model, hf)
  with pytest.raises(ConfigError, match="model_type='deberta-v2'; allowed: bert, roberta"):
    convert.model_dict_from_hf({**hf.to_dict(), "model_type": "deberta-v2"})
  wrong = {**weights, "model.layers.1.attn.Wo.weight": np.zeros((32, 16), np.float32)}
  with pytest.raises(convert.CheckpointMismatch, match=r"tensor layers.1.attn.Wo.weight has "
                                                       r"shape \(32, 16\)"):
    convert.from_hf(wrong, config, model_type="modernbert")
  missing = {k: v for k, v in weights.items() if k != "model.layers.2.mlp_norm.weight"}
  with pytest.raises(convert.CheckpointMismatch, match="missing weights: layers.2.mlp_norm"):
    convert.from_hf(missing, config, model_type="modernbert")
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "keep.txt").write_text("mine")
  with pytest.raises(ConfigError, match="exists; exports never overwrite"):
    pretrained.export(tmp_path / "taken", config, params["encoder"])
  assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
  with pytest.raises(ConfigError, match="model.norm_position='post' cannot be exported as "
                                        "ModernBERT"):
    convert.hf_config_from_model(config.replace(norm_position="post", skip_first_prenorm=False),
                                 "modernbert")


@pytest.mark.slow
def test_checkpoint_directory_round_trip_with_tokenizer(tmp_path):
  """pretrained.load of an exported ModernBERT directory: same params, MLM head mapped, the
  tokenizer written with it."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  model, hf = _reference("modernbert")
  config, params = _ours("modernbert", model, hf)
  vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, **{f"t{i}": i for i in range(3, 64)}}
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t3"))
  path = pretrained.export(tmp_path / "mb", config, params["encoder"], tokenizer,
                           head_params=params["head"])
  assert json.loads((path / "config.json").read_text())["model_type"] == "modernbert"
  ckpt = pretrained.load(path, head=CASES["modernbert"][2])
  assert ckpt.model_type == "modernbert" and ckpt.tokenizer.get_vocab() == vocab
  jax.tree.map(np.testing.assert_array_equal, ckpt.params, params)
