"""Reading and writing Hugging Face BERT-family checkpoint directories (the I/O around
`encoders.convert`).

A checkpoint directory holds `config.json`, `model.safetensors` (read with the `safetensors`
numpy API, no torch needed) or `pytorch_model.bin` (needs the `torch` extra) and
`tokenizer.json` (read with the `tokenizers` library; locating a checkpoint and reading its
tokenizer is `experiments/data/hf_files.py`). Sentence-transformers directories also
carry `1_Pooling/config.json` (the pooling mode) and `sentence_bert_config.json` (the length
the model was trained with); both are honoured when present.

    ckpt = pretrained.load("all-MiniLM-L6-v2")   # a packaged name or a checkpoint directory
    batch = hf_files.tokenize(ckpt.tokenizer, ["a sentence", "another one"])
    vectors = pretrained.embed(ckpt, ["a sentence", "another one"])   # [2, 384], unit norm
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import tokenizers

from encoders import convert
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments.data.hf_files import load_tokenizer, resolve, tokenize

_POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max"}


@dataclasses.dataclass
class Checkpoint:
  """An imported checkpoint: our model config and params, its tokenizer and pooling."""
  model: ModelConfig
  params: dict  # {"encoder": ..., "head": ...} as Model.apply expects
  tokenizer: tokenizers.Tokenizer
  pooling: str  # cls | mean | max (sentence-transformers' pooling; mean otherwise)
  max_seq_length: int  # tokens the checkpoint's tokenizer keeps (truncation)
  head_weights: dict[str, np.ndarray]  # HF task-head tensors (pooler, MLM head), unmapped


def read_weights(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Tensors by name from model.safetensors, else pytorch_model.bin (needs torch)."""
  if (path / "model.safetensors").is_file():
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    return load_file(str(path / "model.safetensors"))
  if (path / "pytorch_model.bin").is_file():
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ConfigError(f"{path}/pytorch_model.bin needs torch: pip install 'encoders[torch]' "
                        "(or convert the checkpoint to model.safetensors)") from None
    state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}
  raise ConfigError(f"checkpoint {path}: neither model.safetensors nor pytorch_model.bin")


def _sentence_transformers_settings(path: pathlib.Path, max_positions: int) -> tuple[str, int]:
  pooling, length = "mean", max_positions
  pooling_file = path / "1_Pooling" / "config.json"
  if pooling_file.is_file():
    modes = [v for k, v in _POOLING_MODES.items() if json.loads(pooling_file.read_text()).get(k)]
    if len(modes) != 1:
      raise ConfigError(f"{pooling_file}: exactly one of {', '.join(_POOLING_MODES)} must be "
                        "set (others are not supported)")
    pooling = modes[0]
  bert_file = path / "sentence_bert_config.json"
  if bert_file.is_file():
    length = min(length, int(json.loads(bert_file.read_text()).get("max_seq_length", length)))
  return pooling, length


def model_dict(path: str | pathlib.Path) -> dict[str, Any]:
  """The `config.model` fields of a checkpoint directory (or packaged name), from config.json."""
  path = resolve(str(path))
  return convert.model_dict_from_hf(json.loads((path / "config.json").read_text()))


def load(path: str | pathlib.Path, *, head: Mapping[str, Any] | None = None,
         scan_layers: bool = True, max_seq_length: int = 0,
         **model_overrides) -> Checkpoint:
  """Imports a checkpoint directory into our Model.

  `head`: the model head (default: the `embedding` head with the checkpoint's pooling and L2
  normalisation, i.e. exactly a sentence-transformers model); `model_overrides`: other
  `config.model` fields, e.g. `attention=dict(name="local", window=...)` or `dropout_rate`.
  """
  path = resolve(str(path))
  model = model_dict(path)
  pooling, length = _sentence_transformers_settings(path, model["max_length"])
  model.update(scan_layers=scan_layers,
               head=dict(head or dict(name="embedding", pooling=pooling, normalize=True)),
               **model_overrides)
  config = ModelConfig.from_dict(model)
  encoder, head_weights = convert.from_hf(read_weights(path), config)
  params = {"encoder": encoder}
  head_shapes = _head_shapes(config)
  if head_shapes:  # a head with parameters of its own starts from its initialiser
    params["head"] = jax.tree.map(np.asarray, head_shapes)
  return Checkpoint(model=config, params=params,
                    tokenizer=load_tokenizer(path, max_seq_length or length),
                    pooling=pooling, max_seq_length=max_seq_length or length,
                    head_weights=head_weights)


def _head_shapes(config: ModelConfig) -> dict:
  """Freshly initialised head params ({} for parameter-free heads such as mean pooling)."""
  example = {"tokens": np.zeros((1, 2), np.int32)}

  def init():
    return nn.unbox(Model(config).init(jax.random.PRNGKey(0), example)["params"])

  if "head" not in jax.eval_shape(init):
    return {}
  return dict(jax.tree.map(np.asarray, init()["head"]))


def embed(ckpt: Checkpoint, texts: Sequence[str], batch_size: int = 64,
          length: int = 0) -> np.ndarray:
  """Head outputs (sentence embeddings) of `texts`, float32 numpy, in input order.

  Texts are batched in order of token length and each batch padded to a multiple of 32
  (at most `length`, the truncation; 0 = the tokenizer's), which bounds both the padding
  and the number of compiled shapes; padding never changes the result (masked).
  """
  model = Model(ckpt.model)
  apply = jax.jit(lambda params, inputs: model.apply({"params": params}, inputs)[0])
  limit = length or ckpt.max_seq_length
  order = np.argsort([len(e.ids) for e in ckpt.tokenizer.encode_batch(list(texts))],
                     kind="stable")
  out = [None] * len(texts)
  for start in range(0, len(texts), batch_size):
    rows = order[start:start + batch_size]
    batch = tokenize(ckpt.tokenizer, [texts[i] for i in rows], limit)
    width = min(limit, -(-int(batch["mask"].sum(1).max()) // 32) * 32)
    vectors = np.asarray(apply(ckpt.params, {k: v[:, :width] for k, v in batch.items()}))
    for i, vector in zip(rows, vectors):
      out[i] = vector
  return np.stack(out)


def export(path: str | pathlib.Path, config: ModelConfig, encoder_params: Mapping,
           tokenizer_from: str | pathlib.Path | None = None,
           head_weights: Mapping[str, np.ndarray] | None = None) -> pathlib.Path:
  """Writes `config.json` + `model.safetensors` (BERT layout) to `path`; copies
  `tokenizer.json` (and the sentence-transformers pooling files) from `tokenizer_from`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  tensors = {**convert.to_hf(jax.tree.map(np.asarray, encoder_params), config),
             **(head_weights or {})}
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps(convert.hf_config_from_model(config), indent=2))
  if tokenizer_from is not None:
    source = resolve(str(tokenizer_from))
    for name in ("tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json"):
      if (source / name).is_file():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, path / name)
  return path
