"""Reading and writing Hugging Face checkpoint directories (BERT, RoBERTa, XLM-R, ELECTRA,
ModernBERT: the I/O around `encoders.convert`).

A checkpoint directory holds `config.json`, `model.safetensors` (read with the `safetensors`
numpy API, no torch needed) or `pytorch_model.bin` (needs the `torch` extra) and
`tokenizer.json` (read with the `tokenizers` library; locating a checkpoint and reading its
tokenizer is `experiments/data/hf_files.py`). Sentence-transformers directories also
carry `1_Pooling/config.json` (the pooling mode) and `sentence_bert_config.json` (the length
the model was trained with); both are honoured when present.

    ckpt = pretrained.load("all-MiniLM-L6-v2")   # a packaged name or a checkpoint directory
    batch = hf_files.tokenize(ckpt.tokenizer, ["a sentence", "another one"])
    vectors = pretrained.embed(ckpt, ["a sentence", "another one"])   # [2, 384], unit norm
    mlm = pretrained.load("path/to/modernbert", head=dict(name="mlm", transform_bias=False))

A head the checkpoint has tensors for (BERT's pooler, an MLM head, ELECTRA's discriminator)
starts from them; other heads start from their initialiser. `export` writes a directory that
transformers' AutoModel (and the task model, when our head maps) loads with no weight newly
initialised; it never writes into an existing path.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np

from encoders import convert
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments.data.hf_files import load_tokenizer, resolve, tokenize

if TYPE_CHECKING:  # annotations only; the tokenizer objects come from hf_files.load_tokenizer
  import tokenizers

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
  head_weights: dict[str, np.ndarray]  # HF task-head tensors (pooler, MLM head, ...)
  model_type: str = "bert"  # config.json's model_type (encoders.convert.MODEL_TYPES)


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


def hf_config(path: str | pathlib.Path) -> dict[str, Any]:
  """A checkpoint directory's (or packaged name's) config.json."""
  return json.loads((resolve(str(path)) / "config.json").read_text())


def model_dict(path: str | pathlib.Path) -> dict[str, Any]:
  """The `config.model` fields of a checkpoint directory (or packaged name), from config.json."""
  return convert.model_dict_from_hf(hf_config(path))


def load(path: str | pathlib.Path, *, head: Mapping[str, Any] | None = None,
         scan_layers: bool = True, max_seq_length: int = 0,
         **model_overrides) -> Checkpoint:
  """Imports a checkpoint directory into our Model.

  `head`: the model head (default: the `embedding` head with the checkpoint's pooling and L2
  normalisation, i.e. exactly a sentence-transformers model); `model_overrides`: other
  `config.model` fields, e.g. `attention=dict(name="local", window=...)` or `dropout_rate`.
  """
  path = resolve(str(path))
  model_type = hf_config(path).get("model_type", "bert")
  model = model_dict(path)
  pooling, length = _sentence_transformers_settings(path, model["max_length"])
  model.update(scan_layers=scan_layers,
               head=dict(head or dict(name="embedding", pooling=pooling, normalize=True)),
               **model_overrides)
  config = ModelConfig.from_dict(model)
  encoder, head_weights = convert.from_hf(read_weights(path), config, model_type=model_type)
  params = {"encoder": encoder}
  fresh = _fresh_head(config)
  if fresh:  # a head with parameters of its own: the checkpoint's tensors, else its initialiser
    mapped = convert.head_from_hf(head_weights, config, model_type) or {}
    params["head"] = _merged(fresh, mapped)
  return Checkpoint(model=config, params=params,
                    tokenizer=load_tokenizer(path, max_seq_length or length),
                    pooling=pooling, max_seq_length=max_seq_length or length,
                    head_weights=head_weights, model_type=model_type)


def _merged(tree: Mapping, update: Mapping) -> dict:
  return {k: _merged(v, update[k]) if isinstance(v, Mapping) and k in update
          else update.get(k, v) for k, v in tree.items()}


def _fresh_head(config: ModelConfig) -> dict:
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
           tokenizer_from: str | pathlib.Path | tokenizers.Tokenizer | None = None,
           head_weights: Mapping[str, np.ndarray] | None = None, *,
           head_params: Mapping | None = None, model_type: str | None = None) -> pathlib.Path:
  """Writes `config.json` + `model.safetensors` of `model_type` (default:
  `convert.infer_model_type`) to the new directory `path`, and the tokenizer:
  `tokenizer_from` a checkpoint directory (tokenizer.json and the sentence-transformers pooling
  files are copied) or a `tokenizers.Tokenizer` (our WordPiece runs' `hf_tokenizer`).
  `head_params`: our head's params, exported as the task model's head where the family has one
  (`encoders.convert.export_tensors`; `head_weights`: an imported checkpoint's head tensors,
  whose pooler is kept). Everything is converted before anything is written; an existing
  `path` is refused."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if path.exists():
    raise ConfigError(f"export path {path} exists; exports never overwrite (pick a new path)")
  model_type = model_type or convert.infer_model_type(config)
  params = {"encoder": jax.tree.map(np.asarray, encoder_params)}
  if head_params is not None:
    params["head"] = jax.tree.map(np.asarray, head_params)
  tensors = convert.export_tensors(config, params, model_type, head_weights)
  hf = convert.hf_config_from_model(config, model_type, with_head=head_params is not None)
  given = tokenizer_from is not None and not isinstance(tokenizer_from, (str, pathlib.Path))
  source = None if tokenizer_from is None or given else resolve(str(tokenizer_from))
  staging = path.with_name(f".{path.name}.partial")
  if staging.exists():
    shutil.rmtree(staging)
  staging.mkdir(parents=True)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(staging / "model.safetensors"))
  (staging / "config.json").write_text(json.dumps(hf, indent=2))
  if given:  # a tokenizers.Tokenizer (our WordPiece runs' `hf_tokenizer`)
    tokenizer_from.save(str(staging / "tokenizer.json"))
  elif source is not None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "sentence_bert_config.json", "1_Pooling/config.json"):
      if (source / name).is_file():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, staging / name)
  staging.rename(path)
  return path
