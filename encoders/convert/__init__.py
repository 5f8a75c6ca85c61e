"""Hugging Face checkpoints <-> our Encoder (and head) parameters: pure mappings, no I/O
(experiments/pretrained.py reads and writes the files).

Families (`config.json`'s `model_type`): `bert`, `roberta`, `xlm-roberta`, `electra`
(encoders/convert/bert.py: one post-norm layout) and `modernbert`
(encoders/convert/modernbert.py). Each maps its config to our `config.model` dict
(`model_dict_from_hf`) and back (`hf_config_from_model`), and each tensor to our parameters
(encoders/convert/tensors.py). Checkpoints of a task model (`bert.`, `roberta.`, `electra.`,
`model.` prefixes) are accepted; their head tensors come back apart and map onto our head where
it has the same shape (`head_from_hf`: BERT's pooler, the MLM heads, ELECTRA's discriminator).
A tensor that is neither known nor a head's, an expected one that is absent, or one whose shape
does not fit is a CheckpointMismatch naming it, before anything is built or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np

from encoders.convert import bert, modernbert
from encoders.convert.tensors import CheckpointMismatch, check_names, read, scanned, write
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig

__all__ = ["CheckpointMismatch", "MODEL_TYPES", "model_dict_from_hf", "hf_config_from_model",
           "from_hf", "head_from_hf", "to_hf", "export_tensors", "infer_model_type"]

_FAMILIES = {**{t: bert for t in bert.MODEL_TYPES}, **{t: modernbert
                                                       for t in modernbert.MODEL_TYPES}}
MODEL_TYPES = tuple(_FAMILIES)


def _family(model_type: str):
  if model_type not in _FAMILIES:
    raise ConfigError(f"checkpoint model_type={model_type!r}; allowed: {', '.join(MODEL_TYPES)}")
  return _FAMILIES[model_type]


def model_dict_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
  """HF `config.json` contents -> our `config.model` dict (head left to the caller)."""
  model_type = hf.get("model_type", "bert")
  return _family(model_type).model_dict(dict(hf), model_type)


def infer_model_type(c: ModelConfig) -> str:
  """The family a model exports as by default: modernbert for a pre-norm model that skips
  layer 0's norm, else bert."""
  return "modernbert" if c.norm_position == "pre" and c.skip_first_prenorm else "bert"


def _task(c: ModelConfig, model_type: str) -> str | None:
  """Our head's name when the family has a task model with that head (mlm, rtd)."""
  name = c.spec("head")["name"]
  return name if name in ("mlm", "rtd") and _family(model_type).head_table(c, model_type)[0] \
      else None


def hf_config_from_model(c: ModelConfig, model_type: str | None = None,
                         with_head: bool = False) -> dict[str, Any]:
  """Our ModelConfig -> the family's `config.json` dict (default family: `infer_model_type`);
  `with_head`: the task model's architecture (the head's tensors are exported too)."""
  model_type = model_type or infer_model_type(c)
  task = _task(c, model_type) if with_head else None
  return _family(model_type).hf_config(c, model_type, task)


def _split(weights: Mapping[str, np.ndarray], model_type: str):
  """(encoder tensors, head tensors), the task model's prefix removed, buffers dropped."""
  family = _family(model_type)
  prefix = family.PREFIXES[model_type]
  if any(k.startswith(prefix) for k in weights):
    weights = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}
  head = {k: v for k, v in weights.items() if k.startswith(family.HEAD_PREFIXES[model_type])}
  body = {k: v for k, v in weights.items()
          if k not in head and k not in getattr(family, "BUFFERS", ())}
  return body, head


def _shapes(c: ModelConfig, part: str) -> dict:
  """The shapes of our `part` ("encoder" or "head") parameters, blocks unrolled."""
  from encoders.model import Encoder, Model  # pylint: disable=import-outside-toplevel
  unrolled = c.replace(scan_layers=False)
  tokens = np.zeros((1, 2), np.int32)

  def init():
    key = jax.random.PRNGKey(0)
    if part == "encoder":  # the encoder alone: any head config (e.g. classes unset) is fine
      return Encoder(unrolled).init(key, tokens)["params"]
    return Model(unrolled).init(key, {"tokens": tokens})["params"]["head"]

  with nn.logical_axis_rules(()):  # shapes only: no sharding constraint from a caller's mesh
    return jax.tree.map(lambda a: a.shape, nn.unbox(jax.eval_shape(init)))


def from_hf(weights: Mapping[str, np.ndarray], c: ModelConfig, scanned_layers: bool | None = None,
            model_type: str = "bert") -> tuple[dict, dict[str, np.ndarray]]:
  """(encoder params, head tensors) from HF tensors keyed by name.

  `scanned_layers` (default: as the Encoder runs `c`) stacks blocks on a leading `layers` axis.
  Unknown, missing or misshapen tensors raise one CheckpointMismatch naming them.
  """
  family = _family(model_type)
  is_scanned = scanned(c) if scanned_layers is None else scanned_layers
  body, head = _split(weights, model_type)
  table = family.encoder_table(c, model_type)
  check_names(body, [t.hf for t in table], c)
  extra = getattr(family, "unmapped_params", lambda _: [])(c)
  body = {**body, **{t.hf: value for t, value in extra}}
  params = read(body, table + [t for t, _ in extra], c, is_scanned, _shapes(c, "encoder"))
  for name in family.head_table(c.replace(head=dict(name="mlm")), model_type)[1]:
    if name.endswith("weight") and name in head and not np.array_equal(
        np.asarray(head[name], np.float32), params["token_embed"]["embedding"]):
      raise CheckpointMismatch(f"checkpoint tensor {name} is not tied to the token embeddings "
                               "(our MLM head decodes with them)")
  return params, head


def head_from_hf(head: Mapping[str, np.ndarray], c: ModelConfig,
                 model_type: str = "bert") -> dict | None:
  """Our head's params from the checkpoint's head tensors (`from_hf`'s second value); None
  when the family has no tensors for our head or the checkpoint none of them (it then starts
  from its initialiser); a CheckpointMismatch naming the first missing one of a partial head."""
  table, _ = _family(model_type).head_table(c, model_type)
  missing = [t.hf for t in table if t.hf not in head]
  if not table or len(missing) == len(table):
    return None
  if missing:
    raise CheckpointMismatch(f"checkpoint has no {missing[0]} for model.head "
                             f"{c.spec('head')['name']!r} ({len(missing)} head tensors missing)")
  return read(head, table, c, False, _shapes(c, "head"))


def to_hf(params: Mapping, c: ModelConfig, model_type: str | None = None
          ) -> dict[str, np.ndarray]:
  """Encoder params (scanned or not) -> HF tensors keyed by name (no prefix), float32."""
  model_type = model_type or infer_model_type(c)
  tensors = write(params, _family(model_type).encoder_table(c, model_type), c)
  if model_type in bert.MODEL_TYPES and not c.type_vocab_size:  # one all-zero type row
    tensors["embeddings.token_type_embeddings.weight"] = np.zeros((1, c.embed_width),
                                                                  np.float32)
  return tensors


def export_tensors(c: ModelConfig, params: Mapping, model_type: str | None = None,
                   head_weights: Mapping[str, np.ndarray] | None = None, seed: int = 0
                   ) -> dict[str, np.ndarray]:
  """Every tensor of the family's model: the encoder, the task head when `params` has one the
  family maps (`hf_config_from_model(..., with_head=True)` names that task model, whose
  prefix the encoder tensors then carry), and for BERT, RoBERTa and XLM-R the pooler their base
  model has: our classification head's, else `head_weights`' (an imported checkpoint's), else
  BERT's init N(0, init_std) with bias 0 from `seed` (so that no loader re-initialises it)."""
  model_type = model_type or infer_model_type(c)
  family = _family(model_type)
  tensors = to_hf(params["encoder"], c, model_type)
  table, _ = family.head_table(c, model_type)
  head = write(params["head"], table, c) if table and "head" in params else {}
  if model_type in bert.MODEL_TYPES and model_type != "electra":
    pooler = {k: v for k, v in head.items() if k.startswith("pooler.")}
    if not pooler and head_weights and "pooler.dense.weight" in head_weights:
      pooler = {k: np.asarray(head_weights[k], np.float32)
                for k in ("pooler.dense.weight", "pooler.dense.bias")}
    if not pooler:
      rng = np.random.default_rng(seed)
      pooler = {"pooler.dense.weight": (rng.standard_normal((c.dim, c.dim)) * c.init_std
                                        ).astype(np.float32),
                "pooler.dense.bias": np.zeros(c.dim, np.float32)}
    tensors.update(pooler)
    head = {k: v for k, v in head.items() if k not in pooler}
  if head:
    prefix = family.PREFIXES[model_type]
    tensors = {prefix + k: v for k, v in tensors.items()}
  return {**tensors, **head}
