"""BERT-layout checkpoints: BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019), XLM-R
(Conneau et al. 2020, RoBERTa's layout) and ELECTRA (Clark et al. 2020).

All are post-norm encoders: token + token-type + learned absolute position embeddings, a
LayerNorm on their sum, then blocks `norm(x + attn(x))`, `norm(x + mlp(x))` with biases
everywhere, and no final norm: our Encoder with `norm_position="post"`, `embed_norm=True`,
`type_vocab_size`, the `learned` position and `layernorm` (epsilon `layer_norm_eps`):

    embeddings.word_embeddings.weight        token_embed/embedding
    embeddings.position_embeddings.weight    position/embedding
    embeddings.token_type_embeddings.weight  type_embed/embedding
    embeddings.LayerNorm.{weight,bias}       embed_norm/layernorm/{scale,bias}
    embeddings_project.{weight,bias}         embed_project (ELECTRA, embedding_size != hidden)
    encoder.layer.i.attention.self.{query,key,value}   attention/{query,key,value}
    encoder.layer.i.attention.output.dense              attention/out
    encoder.layer.i.attention.output.LayerNorm          attention_norm/layernorm
    encoder.layer.i.intermediate.dense                  ffn/wi
    encoder.layer.i.output.dense                        ffn/wo
    encoder.layer.i.output.LayerNorm                    ffn_norm/layernorm

Family differences: RoBERTa / XLM-R number positions from padding_idx + 1 = 2 (rows 0 and 1
of their table are read only by padding), so our table is theirs without its first two rows
and an export writes zeros there; ELECTRA's embeddings may be narrower than the model
(`model.embed_dim`). Heads: BERT's pooler (`pooler.dense`, our classification head's
`pooler`), the MLM heads (BERT `cls.predictions.*`, RoBERTa `lm_head.*`, ELECTRA's generator
`generator_predictions.*` + `generator_lm_head.*`; decoders tied to the token embeddings) and
ELECTRA's discriminator (`discriminator_predictions.*`, our `rtd` head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from encoders.convert.tensors import Tensor
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra")
PREFIXES = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta.",
            "electra": "electra."}
HEAD_PREFIXES = {"bert": ("pooler.", "cls."), "roberta": ("pooler.", "lm_head.", "classifier."),
                 "xlm-roberta": ("pooler.", "lm_head.", "classifier."),
                 "electra": ("discriminator_predictions.", "generator_predictions.",
                             "generator_lm_head.", "classifier.")}
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # not weights
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu"}
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}  # padding_idx (1) + 1
ARCHITECTURES = {  # (base model, MLM model, our head -> task model)
    "bert": ("BertModel", {"mlm": "BertForMaskedLM"}),
    "roberta": ("RobertaModel", {"mlm": "RobertaForMaskedLM"}),
    "xlm-roberta": ("XLMRobertaModel", {"mlm": "XLMRobertaForMaskedLM"}),
    "electra": ("ElectraModel", {"mlm": "ElectraForMaskedLM", "rtd": "ElectraForPreTraining"}),
}

_LAYER = {
    "attention.self.query.weight": (("attention", "query", "kernel"), "qkv"),
    "attention.self.query.bias": (("attention", "query", "bias"), "heads"),
    "attention.self.key.weight": (("attention", "key", "kernel"), "qkv"),
    "attention.self.key.bias": (("attention", "key", "bias"), "heads"),
    "attention.self.value.weight": (("attention", "value", "kernel"), "qkv"),
    "attention.self.value.bias": (("attention", "value", "bias"), "heads"),
    "attention.output.dense.weight": (("attention", "out", "kernel"), "out"),
    "attention.output.dense.bias": (("attention", "out", "bias"), "same"),
    "attention.output.LayerNorm.weight": (("attention_norm", "layernorm", "scale"), "same"),
    "attention.output.LayerNorm.bias": (("attention_norm", "layernorm", "bias"), "same"),
    "intermediate.dense.weight": (("ffn", "wi", "kernel"), "linear"),
    "intermediate.dense.bias": (("ffn", "wi", "bias"), "same"),
    "output.dense.weight": (("ffn", "wo", "kernel"), "linear"),
    "output.dense.bias": (("ffn", "wo", "bias"), "same"),
    "output.LayerNorm.weight": (("ffn_norm", "layernorm", "scale"), "same"),
    "output.LayerNorm.bias": (("ffn_norm", "layernorm", "bias"), "same"),
}


def model_dict(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
  """HF `config.json` contents -> our `config.model` dict (head left to the caller)."""
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConfigError(f"checkpoint position_embedding_type={hf['position_embedding_type']!r}; "
                      "allowed: absolute")
  act = hf.get("hidden_act", "gelu")
  if act not in ACTIVATIONS:
    raise ConfigError(f"checkpoint hidden_act={act!r}; allowed: {', '.join(ACTIVATIONS)}")
  offset = POSITION_OFFSET.get(model_type, 0)
  if offset and hf.get("pad_token_id", 1) != offset - 1:
    raise ConfigError(f"checkpoint pad_token_id={hf.get('pad_token_id')!r}; {model_type} "
                      f"positions are read only with pad_token_id={offset - 1}")
  embedding_size = hf.get("embedding_size", hf["hidden_size"]) if model_type == "electra" else 0
  return dict(
      vocab_size=hf["vocab_size"], max_length=hf["max_position_embeddings"] - offset,
      dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
      embed_dim=0 if embedding_size == hf["hidden_size"] else embedding_size,
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
      norm_position="post", embed_norm=True, type_vocab_size=hf.get("type_vocab_size", 2),
      position=dict(name="learned"), attention=dict(name="dense"),
      norm=dict(name="layernorm", epsilon=hf.get("layer_norm_eps", 1e-12)),
      ffn=dict(name="mlp", activation=ACTIVATIONS[act]), connection=dict(name="residual"))


def hf_config(c: ModelConfig, model_type: str, task: str | None) -> dict[str, Any]:
  """Our ModelConfig -> the family's `config.json` dict; only BERT-shaped models export (any
  attention variant: the weights are the same, the file describes dense attention). A model
  without token types exports one all-zero type row (BERT-layout models always add one)."""
  norm, ffn = c.spec("norm"), c.spec("ffn")
  checks = {"norm_position": (c.norm_position, "post"), "embed_norm": (c.embed_norm, True),
            "position.name": (c.spec("position")["name"], "learned"),
            "norm.name": (norm["name"], "layernorm"), "norm.use_bias": (norm["use_bias"], True),
            "ffn.name": (ffn["name"], "mlp"), "use_bias": (c.use_bias, True),
            "connection.name": (c.spec("connection")["name"], "residual"),
            "layer_pattern": (c.layer_pattern, ()),
            "head_dim": (c.resolved_head_dim * c.num_heads, c.dim)}
  if model_type != "electra":
    checks["embed_dim"] = (c.embed_width, c.dim)
  for field, (value, wanted) in checks.items():
    if value != wanted:
      raise ConfigError(f"model.{field}={value!r} cannot be exported as {model_type}; "
                        f"needs {wanted!r}")
  inverse = {ours: hf for hf, ours in ACTIVATIONS.items() if hf != "gelu_pytorch_tanh"}
  base, tasks = ARCHITECTURES[model_type]
  offset = POSITION_OFFSET.get(model_type, 0)
  out = {"architectures": [tasks.get(task, base)], "model_type": model_type,
         "vocab_size": c.vocab_size, "max_position_embeddings": c.max_length + offset,
         "hidden_size": c.dim, "num_hidden_layers": c.num_layers,
         "num_attention_heads": c.num_heads, "intermediate_size": c.mlp_dim,
         "hidden_act": inverse[ffn.get("activation", "gelu")],
         "hidden_dropout_prob": c.dropout_rate,
         "attention_probs_dropout_prob": c.attention_dropout_rate,
         "type_vocab_size": max(c.type_vocab_size, 1), "layer_norm_eps": norm["epsilon"],
         "position_embedding_type": "absolute", "pad_token_id": max(offset - 1, 0)}
  if model_type == "electra":
    out["embedding_size"] = c.embed_width
  if offset:
    out.update(bos_token_id=0, eos_token_id=2)
  return out


def encoder_table(c: ModelConfig, model_type: str) -> list[Tensor]:
  """The encoder's tensors (names without the task model's prefix)."""
  offset = POSITION_OFFSET.get(model_type, 0)
  table = [
      Tensor("embeddings.word_embeddings.weight", (("token_embed", "embedding"),)),
      Tensor("embeddings.position_embeddings.weight", (("position", "embedding"),),
             f"rows_after_{offset}" if offset else "same"),
      Tensor("embeddings.LayerNorm.weight", (("embed_norm", "layernorm", "scale"),)),
      Tensor("embeddings.LayerNorm.bias", (("embed_norm", "layernorm", "bias"),)),
  ]
  if c.type_vocab_size:
    table.append(Tensor("embeddings.token_type_embeddings.weight", (("type_embed", "embedding"),)))
  if c.embed_width != c.dim:
    table += [Tensor("embeddings_project.weight", (("embed_project", "kernel"),), "linear"),
              Tensor("embeddings_project.bias", (("embed_project", "bias"),))]
  table += [Tensor(f"encoder.layer.{i}.{name}", (("layer", i, *path),), kind)
            for i in range(c.num_layers) for name, (path, kind) in _LAYER.items()]
  return table


def head_table(c: ModelConfig, model_type: str) -> tuple[list[Tensor], tuple[str, ...]]:
  """(the head's tensors, the names of tied decoder tensors) for our head; ([], ()) when the
  family has no such head. Paths are inside our head's params."""
  head = c.spec("head")
  if head["name"] == "classification" and head["pooler"] and model_type != "electra":
    return [Tensor("pooler.dense.weight", (("pooler", "kernel"),), "linear"),
            Tensor("pooler.dense.bias", (("pooler", "bias"),))], ()
  if head["name"] == "rtd" and model_type == "electra":
    return [Tensor("discriminator_predictions.dense.weight", (("transform", "kernel"),),
                   "linear"),
            Tensor("discriminator_predictions.dense.bias", (("transform", "bias"),)),
            Tensor("discriminator_predictions.dense_prediction.weight", (("logit", "kernel"),),
                   "linear"),
            Tensor("discriminator_predictions.dense_prediction.bias", (("logit", "bias"),))], ()
  if head["name"] != "mlm" or not head["tie_embeddings"]:
    return [], ()
  if not (head["transform_bias"] and head["decoder_bias"]):
    raise ConfigError(f"model.head (mlm) needs transform_bias and decoder_bias for {model_type}")
  names = {"bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                    "cls.predictions.bias", ("cls.predictions.decoder.weight",
                                             "cls.predictions.decoder.bias")),
           "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias",
                       ("lm_head.decoder.weight", "lm_head.decoder.bias")),
           "electra": ("generator_predictions.dense", "generator_predictions.LayerNorm",
                       "generator_lm_head.bias", ("generator_lm_head.weight",))}
  dense, norm, bias, tied = names["roberta" if model_type == "xlm-roberta" else model_type]
  return [Tensor(f"{dense}.weight", (("transform", "kernel"),), "linear"),
          Tensor(f"{dense}.bias", (("transform", "bias"),)),
          Tensor(f"{norm}.weight", (("norm", "layernorm", "scale"),)),
          Tensor(f"{norm}.bias", (("norm", "layernorm", "bias"),)),
          Tensor(bias, (("bias",),))], tied
