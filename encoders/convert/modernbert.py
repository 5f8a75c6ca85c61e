"""ModernBERT checkpoints (Warner et al. 2024; transformers' `modeling_modernbert.py`).

A pre-norm encoder: token embeddings -> LayerNorm; per layer `x + Wo(attn(attn_norm(x)))`
(layer 0 without attn_norm: our `skip_first_prenorm`) and `x + Wo(act(in) * gate)` with
`in, gate = Wi(mlp_norm(x)).chunk(2)`; a final LayerNorm. Every `global_attn_every_n_layers`-th
layer (from 0) attends globally with RoPE theta `global_rope_theta`, the others within
|i - j| <= local_attention / 2 with `local_rope_theta`: our `local` attention with
`window_tokens = local_attention / 2` and `model.layer_pattern`.

    embeddings.tok_embeddings.weight   token_embed/embedding
    embeddings.norm.{weight,bias}      embed_norm/layernorm/{scale,bias}
    layers.i.attn_norm                 attention_norm/layernorm   (i > 0)
    layers.i.attn.Wqkv                 attention/{query,key,value} (fused: q, k, v rows)
    layers.i.attn.Wo                   attention/out
    layers.i.mlp_norm                  ffn_norm/layernorm
    layers.i.mlp.Wi                    ffn/{wi_gate,wi_up}         (fused: activated half first)
    layers.i.mlp.Wo                    ffn/wo
    final_norm                         final_norm/layernorm
    head.dense, head.norm              MLM head transform, norm
    decoder.bias                       MLM head bias (decoder.weight: tied to the embeddings)

Layer 0's attention norm has parameters in our layout (unused): the import sets them to the
norm's identity (scale 1, bias 0), the export leaves them out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from encoders import patterns
from encoders.convert.tensors import Tensor
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig

MODEL_TYPES = ("modernbert",)
PREFIXES = {"modernbert": "model."}
HEAD_PREFIXES = {"modernbert": ("head.", "decoder.", "classifier.")}
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu"}


def _global(theta: float) -> dict:
  return {"attention": {"name": "dense"}, "position": {"base": theta}}


def model_dict(hf: dict[str, Any], model_type: str = "modernbert") -> dict[str, Any]:
  """HF `config.json` contents -> our `config.model` dict (head left to the caller)."""
  del model_type
  for field in ("hidden_activation", "classifier_activation"):
    if hf.get(field, "gelu") not in ACTIVATIONS:
      raise ConfigError(f"checkpoint {field}={hf[field]!r}; allowed: {', '.join(ACTIVATIONS)}")
  if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
    raise ConfigError("checkpoint attention_bias != mlp_bias; our model.use_bias sets both")
  layers, every = hf["num_hidden_layers"], hf.get("global_attn_every_n_layers", 3)
  global_theta = hf.get("global_rope_theta", 160_000.0)
  local_theta = hf.get("local_rope_theta") or global_theta
  window = hf.get("local_attention", 128) // 2
  model = dict(
      vocab_size=hf["vocab_size"], max_length=hf.get("max_position_embeddings", 8192),
      dim=hf["hidden_size"], num_layers=layers, num_heads=hf["num_attention_heads"],
      mlp_dim=hf["intermediate_size"], dropout_rate=hf.get("mlp_dropout", 0.0),
      attention_dropout_rate=hf.get("attention_dropout", 0.0),
      attention_output_dropout_rate=hf.get("attention_dropout", 0.0),
      use_bias=hf.get("attention_bias", False), norm_position="pre", embed_norm=True,
      skip_first_prenorm=True, type_vocab_size=0, init_method="modernbert",
      init_std=hf.get("initializer_range", 0.02),
      norm=dict(name="layernorm", epsilon=hf.get("norm_eps", 1e-5),
                use_bias=hf.get("norm_bias", False)),
      ffn=dict(name="glu", activation=ACTIVATIONS[hf.get("hidden_activation", "gelu")]),
      connection=dict(name="residual"), position=dict(name="rope", base=local_theta))
  if every == 1 or layers == 1:  # every layer global
    model.update(attention=dict(name="dense"), position=dict(name="rope", base=global_theta))
    return model
  model["attention"] = dict(name="local", window_tokens=window, block_size=min(64, window))
  size = every if layers % every == 0 else layers
  model["layer_pattern"] = tuple(_global(global_theta) if i % every == 0 else {}
                                 for i in range(size))
  return model


def _layout(c: ModelConfig) -> tuple[int, int, float, float]:
  """(global_attn_every_n_layers, local_attention, global theta, local theta) of our model;
  a ConfigError where ModernBERT cannot express it."""
  kinds, windows, thetas = [], set(), {True: set(), False: set()}
  for i in range(c.num_layers):
    layer = patterns.layer_config(c, i)
    attention, position = layer.spec("attention"), layer.spec("position")
    is_global = attention["name"] == "dense"
    if not is_global:
      if attention["name"] != "local" or attention.get("window_tokens") is None:
        raise ConfigError(f"layer {i}: model.attention {attention['name']!r} cannot be "
                          "exported as ModernBERT; needs dense or local with window_tokens")
      windows.add(attention["window_tokens"])
    if position["name"] != "rope" or position["fraction"] != 1.0:
      raise ConfigError(f"layer {i}: model.position {position!r} cannot be exported as "
                        "ModernBERT; needs rope with fraction 1")
    thetas[is_global].add(position["base"])
    kinds.append(is_global)
  every = next((i for i in range(1, c.num_layers) if kinds[i]), c.num_layers)
  if kinds != [i % every == 0 for i in range(c.num_layers)] or len(windows) > 1 or any(
      len(t) > 1 for t in thetas.values()):
    raise ConfigError("model.layer_pattern cannot be exported as ModernBERT: it needs a global "
                      "(dense) layer at 0 and every n-th layer, one local window and one RoPE "
                      "theta per kind")
  global_theta = next(iter(thetas[True]))
  return (every, 2 * next(iter(windows), c.max_length), global_theta,
          next(iter(thetas[False]), global_theta))


def hf_config(c: ModelConfig, model_type: str, task: str | None,
              pad_token_id: int = 0) -> dict[str, Any]:
  """Our ModelConfig -> a ModernBERT `config.json` dict."""
  del model_type
  norm, ffn, head = c.spec("norm"), c.spec("ffn"), c.spec("head")
  checks = {"norm_position": (c.norm_position, "pre"), "embed_norm": (c.embed_norm, True),
            "skip_first_prenorm": (c.skip_first_prenorm, True),
            "type_vocab_size": (c.type_vocab_size, 0), "embed_dim": (c.embed_width, c.dim),
            "norm.name": (norm["name"], "layernorm"), "ffn.name": (ffn["name"], "glu"),
            "connection.name": (c.spec("connection")["name"], "residual"),
            "head_dim": (c.resolved_head_dim * c.num_heads, c.dim)}
  for field, (value, wanted) in checks.items():
    if value != wanted:
      raise ConfigError(f"model.{field}={value!r} cannot be exported as ModernBERT; "
                        f"needs {wanted!r}")
  every, local, global_theta, local_theta = _layout(c)
  inverse = {ours: hf for hf, ours in ACTIVATIONS.items() if hf != "gelu_pytorch_tanh"}
  mlm = head["name"] == "mlm"
  return {
      "architectures": ["ModernBertForMaskedLM" if task == "mlm" else "ModernBertModel"],
      "model_type": "modernbert", "vocab_size": c.vocab_size, "hidden_size": c.dim,
      "intermediate_size": c.mlp_dim, "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads, "max_position_embeddings": c.max_length,
      "hidden_activation": inverse[ffn["activation"]], "norm_eps": norm["epsilon"],
      "norm_bias": norm["use_bias"], "attention_bias": c.use_bias, "mlp_bias": c.use_bias,
      "attention_dropout": c.attention_dropout_rate, "embedding_dropout": c.dropout_rate,
      "mlp_dropout": c.dropout_rate, "initializer_range": c.init_std,
      "initializer_cutoff_factor": 2.0, "global_attn_every_n_layers": every,
      "local_attention": local, "global_rope_theta": global_theta,
      "local_rope_theta": local_theta,
      "classifier_activation": inverse[head["activation"]] if mlm else "gelu",
      "classifier_bias": head["transform_bias"] if mlm else False,
      "decoder_bias": head["decoder_bias"] if mlm else True, "tie_word_embeddings": True,
      "pad_token_id": pad_token_id, "bos_token_id": pad_token_id, "eos_token_id": pad_token_id,
      "cls_token_id": pad_token_id, "sep_token_id": pad_token_id}


def _norm(name: str, ours: tuple, use_bias: bool) -> list[Tensor]:
  table = [Tensor(f"{name}.weight", (ours + ("layernorm", "scale"),))]
  if use_bias:
    table.append(Tensor(f"{name}.bias", (ours + ("layernorm", "bias"),)))
  return table


def encoder_table(c: ModelConfig, model_type: str = "modernbert") -> list[Tensor]:
  del model_type
  norm_bias, bias = c.spec("norm")["use_bias"], c.use_bias
  table = [Tensor("embeddings.tok_embeddings.weight", (("token_embed", "embedding"),))]
  table += _norm("embeddings.norm", ("embed_norm",), norm_bias)
  for i in range(c.num_layers):
    layer, name = ("layer", i), f"layers.{i}"
    qkv = tuple(layer + ("attention", p, "kernel") for p in ("query", "key", "value"))
    glu = (layer + ("ffn", "wi_gate", "kernel"), layer + ("ffn", "wi_up", "kernel"))
    if i > 0:
      table += _norm(f"{name}.attn_norm", layer + ("attention_norm",), norm_bias)
    table += [Tensor(f"{name}.attn.Wqkv.weight", qkv, "qkv_x3"),
              Tensor(f"{name}.attn.Wo.weight", (layer + ("attention", "out", "kernel"),), "out"),
              Tensor(f"{name}.mlp.Wi.weight", glu, "linear_x2"),
              Tensor(f"{name}.mlp.Wo.weight", (layer + ("ffn", "wo", "kernel"),), "linear")]
    if bias:
      table += [
          Tensor(f"{name}.attn.Wqkv.bias", tuple(p[:-1] + ("bias",) for p in qkv), "heads_x3"),
          Tensor(f"{name}.attn.Wo.bias", (layer + ("attention", "out", "bias"),)),
          Tensor(f"{name}.mlp.Wi.bias", tuple(p[:-1] + ("bias",) for p in glu), "same_x2"),
          Tensor(f"{name}.mlp.Wo.bias", (layer + ("ffn", "wo", "bias"),))]
    table += _norm(f"{name}.mlp_norm", layer + ("ffn_norm",), norm_bias)
  return table + _norm("final_norm", ("final_norm",), norm_bias)


def unmapped_params(c: ModelConfig) -> list[tuple[Tensor, np.ndarray]]:
  """Our parameters without an HF tensor, as (pseudo-tensor, value): layer 0's unused
  attention norm at the norm's identity."""
  ours = ("layer", 0, "attention_norm", "layernorm")
  params = [(Tensor("(none: layer 0 has no attn_norm).weight", (ours + ("scale",),)),
             np.ones(c.dim, np.float32))]
  if c.spec("norm")["use_bias"]:
    params.append((Tensor("(none: layer 0 has no attn_norm).bias", (ours + ("bias",),)),
                   np.zeros(c.dim, np.float32)))
  return params


def head_table(c: ModelConfig, model_type: str = "modernbert"
               ) -> tuple[list[Tensor], tuple[str, ...]]:
  """(the MLM head's tensors, the tied decoder weight) for an `mlm` head, else ([], ())."""
  del model_type
  head = c.spec("head")
  if head["name"] != "mlm" or not head["tie_embeddings"]:
    return [], ()
  table = [Tensor("head.dense.weight", (("transform", "kernel"),), "linear")]
  if head["transform_bias"]:
    table.append(Tensor("head.dense.bias", (("transform", "bias"),)))
  table += _norm("head.norm", ("norm",), c.spec("norm")["use_bias"])
  if head["decoder_bias"]:
    table.append(Tensor("decoder.bias", (("bias",),)))
  return table, ("decoder.weight",)
