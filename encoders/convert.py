"""Hugging Face BERT-family checkpoints <-> our Encoder parameters (pure mappings, no I/O).

BERT (Devlin et al. 2019) is a post-norm encoder: token + token-type + learned absolute
position embeddings, a LayerNorm on their sum, then blocks `norm(x + attn(x))`,
`norm(x + mlp(x))` with exact GELU and biases everywhere, and no final norm. Our `Encoder`
expresses it with `norm_position="post"`, `embed_norm=True`, `type_vocab_size`, the `learned`
position and `layernorm` with epsilon `layer_norm_eps`, so a checkpoint maps onto it one
tensor at a time:

    embeddings.word_embeddings.weight        token_embed/embedding
    embeddings.position_embeddings.weight    position/embedding
    embeddings.token_type_embeddings.weight  type_embed/embedding
    embeddings.LayerNorm.{weight,bias}       embed_norm/layernorm/{scale,bias}
    encoder.layer.i.attention.self.{query,key,value}   attention/{query,key,value}
    encoder.layer.i.attention.output.dense              attention/out
    encoder.layer.i.attention.output.LayerNorm          attention_norm/layernorm
    encoder.layer.i.intermediate.dense                  ffn/wi
    encoder.layer.i.output.dense                        ffn/wo
    encoder.layer.i.output.LayerNorm                    ffn_norm/layernorm

Torch `Linear` weights are [out, in]; our kernels are [in, out] with heads split out
([dim, heads, head_dim] for q/k/v, [heads, head_dim, dim] for the output projection). Blocks are
stacked on a leading `layers` axis when the model scans them, else named `blocks_<i>`.
Checkpoints whose keys carry a `bert.` prefix (BertForMaskedLM, ...) are accepted; the
task-head weights `pooler.*` and `cls.*` are returned apart, since our heads differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from encoders.config import ModelConfig
from encoders.errors import ConfigError

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu"}
MODEL_TYPES = ("bert",)
HEAD_PREFIXES = ("pooler.", "cls.")
BUFFERS = ("embeddings.position_ids",)  # saved by some torch versions; not weights

_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("token_embed", "embedding"),
    "embeddings.position_embeddings.weight": ("position", "embedding"),
    "embeddings.token_type_embeddings.weight": ("type_embed", "embedding"),
    "embeddings.LayerNorm.weight": ("embed_norm", "layernorm", "scale"),
    "embeddings.LayerNorm.bias": ("embed_norm", "layernorm", "bias"),
}
# HF name inside a layer -> (our path inside a block, kind of reshaping)
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


class CheckpointMismatch(ConfigError):
  """The checkpoint's tensors do not match the model: lists the unknown and missing names."""


def model_dict_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
  """HF `config.json` contents -> our `config.model` dict (head left to the caller)."""
  model_type = hf.get("model_type", "bert")
  if model_type not in MODEL_TYPES:
    raise ConfigError(f"checkpoint model_type={model_type!r}; allowed: {', '.join(MODEL_TYPES)}")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConfigError(f"checkpoint position_embedding_type={hf['position_embedding_type']!r}; "
                      "allowed: absolute")
  act = hf.get("hidden_act", "gelu")
  if act not in ACTIVATIONS:
    raise ConfigError(f"checkpoint hidden_act={act!r}; allowed: {', '.join(ACTIVATIONS)}")
  return dict(
      vocab_size=hf["vocab_size"], max_length=hf["max_position_embeddings"],
      dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
      norm_position="post", embed_norm=True, type_vocab_size=hf.get("type_vocab_size", 2),
      position=dict(name="learned"), attention=dict(name="dense"),
      norm=dict(name="layernorm", epsilon=hf.get("layer_norm_eps", 1e-12)),
      ffn=dict(name="mlp", activation=ACTIVATIONS[act]), connection=dict(name="residual"))


def hf_config_from_model(c: ModelConfig) -> dict[str, Any]:
  """Our ModelConfig -> an HF BERT `config.json` dict; only BERT-shaped models export (any
  attention variant: the weights are the same, the file describes dense attention)."""
  norm, ffn = c.spec("norm"), c.spec("ffn")
  checks = {"norm_position": (c.norm_position, "post"), "embed_norm": (c.embed_norm, True),
            "position.name": (c.spec("position")["name"], "learned"),
            "norm.name": (norm["name"], "layernorm"), "ffn.name": (ffn["name"], "mlp"),
            "connection.name": (c.spec("connection")["name"], "residual"),
            "head_dim": (c.resolved_head_dim * c.num_heads, c.dim)}
  for field, (value, wanted) in checks.items():
    if value != wanted:
      raise ConfigError(f"model.{field}={value!r} cannot be exported as BERT; needs {wanted!r}")
  inverse = {ours: hf for hf, ours in ACTIVATIONS.items() if hf != "gelu_pytorch_tanh"}
  return {"architectures": ["BertModel"], "model_type": "bert",
          "vocab_size": c.vocab_size, "max_position_embeddings": c.max_length,
          "hidden_size": c.dim, "num_hidden_layers": c.num_layers,
          "num_attention_heads": c.num_heads, "intermediate_size": c.mlp_dim,
          "hidden_act": inverse[ffn.get("activation", "gelu")],
          "hidden_dropout_prob": c.dropout_rate,
          "attention_probs_dropout_prob": c.attention_dropout_rate,
          "type_vocab_size": c.type_vocab_size, "layer_norm_eps": norm.get("epsilon", 1e-6),
          "position_embedding_type": "absolute", "pad_token_id": 0}


def _to_ours(w: np.ndarray, kind: str, c: ModelConfig) -> np.ndarray:
  heads, head_dim = c.num_heads, c.resolved_head_dim
  if kind == "qkv":
    return w.T.reshape(c.dim, heads, head_dim)
  if kind == "heads":
    return w.reshape(heads, head_dim)
  if kind == "out":
    return w.T.reshape(heads, head_dim, c.dim)
  if kind == "linear":
    return w.T
  return w


def _to_hf(w: np.ndarray, kind: str) -> np.ndarray:
  if kind == "qkv":  # [dim, heads, head_dim] -> [heads * head_dim, dim]
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
  if kind == "out":  # [heads, head_dim, dim] -> [dim, heads * head_dim]
    return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
  if kind == "heads":
    return w.reshape(-1)
  if kind == "linear":
    return np.ascontiguousarray(w.T)
  return w


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _expected_names(c: ModelConfig) -> list[str]:
  names = [n for n in _EMBEDDINGS if c.type_vocab_size or "token_type" not in n]
  names += [f"encoder.layer.{i}.{n}" for i in range(c.num_layers) for n in _LAYER]
  return names


def from_hf(weights: Mapping[str, np.ndarray], c: ModelConfig,
            scanned: bool | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(encoder params, head weights) from HF tensors keyed by name.

  `scanned` (default: `c.scan_layers`) stacks blocks on a leading `layers` axis. Any tensor
  that is neither a known encoder weight, a buffer nor a task-head weight, and any expected
  weight that is absent, raises one CheckpointMismatch listing them all.
  """
  scanned = c.scan_layers if scanned is None else scanned
  prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
  stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}
  head = {k: v for k, v in stripped.items() if k.startswith(HEAD_PREFIXES)}
  body = {k: v for k, v in stripped.items() if k not in head and k not in BUFFERS}
  expected = _expected_names(c)
  unknown, missing = sorted(set(body) - set(expected)), sorted(set(expected) - set(body))
  if unknown or missing:
    raise CheckpointMismatch(
        f"checkpoint does not match model (dim={c.dim}, num_layers={c.num_layers}): "
        f"unknown weights: {', '.join(unknown) or '(none)'}; "
        f"missing weights: {', '.join(missing) or '(none)'}")
  params: dict = {}
  for name, path in _EMBEDDINGS.items():
    if name in body:
      _set(params, path, np.asarray(body[name], np.float32))
  if params["position"]["embedding"].shape[0] != c.max_length:
    raise CheckpointMismatch(f"position table has {params['position']['embedding'].shape[0]} "
                             f"rows; model.max_length={c.max_length}")
  layers = [{} for _ in range(c.num_layers)]
  for i, block in enumerate(layers):
    for name, (path, kind) in _LAYER.items():
      value = np.asarray(body[f"encoder.layer.{i}.{name}"], np.float32)
      _set(block, path, _to_ours(value, kind, c))
  if scanned:
    params["blocks"] = _stack(layers)
  else:
    params.update({f"blocks_{i}": block for i, block in enumerate(layers)})
  return params, head


def _stack(trees: list[dict]) -> dict:
  first = trees[0]
  return {k: _stack([t[k] for t in trees]) if isinstance(first[k], Mapping)
          else np.stack([t[k] for t in trees]) for k in first}


def to_hf(params: Mapping, c: ModelConfig) -> dict[str, np.ndarray]:
  """Encoder params (scanned or not) -> HF tensors keyed by name, float32 numpy."""
  out = {}
  for name, path in _EMBEDDINGS.items():
    if c.type_vocab_size or "token_type" not in name:
      out[name] = np.asarray(_get(params, path), np.float32)
  for i in range(c.num_layers):
    for name, (path, kind) in _LAYER.items():
      if "blocks" in params:
        value = np.asarray(_get(params["blocks"], path))[i]
      else:
        value = np.asarray(_get(params[f"blocks_{i}"], path))
      out[f"encoder.layer.{i}.{name}"] = _to_hf(value.astype(np.float32), kind)
  return out
