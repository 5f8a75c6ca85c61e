"""Start a run from another run's parameters, or from a pretrained checkpoint:
`config.init_from` (configs/base.py).

    config.init_from = dict(workdir="runs/dense", upcycle=True, drop_fraction=0.0)
    config.init_from = dict(pretrained="all-MiniLM-L6-v2")  # or a Hugging Face BERT directory

Used only when the run's own workdir has no checkpoint (a resumed run continues from its own).
Reads the source run's `config.json` and its latest Orbax checkpoint, and takes its
parameters; with `upcycle=True` (default) a dense source becomes this run's MoE model when
this run's FFN is `moe` (encoders/moe/upcycle.py: Sparse Upcycling, optionally
Drop-Upcycling); otherwise the parameters are used as they are (same shapes required). The
optimizer state and step start fresh. The encoder is found at params['encoder'] or
params['discriminator']['encoder'] (ELECTRA).

With `encoder_only=True` only the source run's encoder is taken (e.g. an MLM or ELECTRA
pretraining run fine-tuned on another task, whose head differs); this run's head starts from its
initialiser and the encoders' shapes must match.

A source encoder without a token-type table (every MLM, ELECTRA and ModernBERT pretraining
run) fills this run's type table, if it has one, with zeros: adding a zero row to every token
is the source's own function, and fine-tuning learns the types from there.

With `pretrained`, only the encoder is taken (experiments/pretrained.py imports the checkpoint in
this run's layout); the head starts from its initialiser. This run's `config.model` must
describe the checkpoint's architecture (`pretrained.model_dict` gives its fields), except the
attention variant (same projections: e.g. `local` with a window covering the inputs computes
the same function), dropout, dtype and remat, and the FFN when upcycling it to MoE.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.moe.upcycle import encoder_path, upcycle, upcycle_encoder
from experiments import pretrained

# Model fields a pretrained checkpoint fixes (the others may differ in the fine-tuning run).
ARCHITECTURE_FIELDS = ("dim", "num_layers", "num_heads", "head_dim", "mlp_dim", "embed_dim",
                       "norm_position", "embed_norm", "skip_first_prenorm", "type_vocab_size",
                       "norm", "position", "use_bias", "layer_pattern")


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def source_params(workdir: str):
  """(the source run's `config.model` dict, its latest checkpoint's params as host arrays)."""
  config_path = os.path.join(workdir, "config.json")
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.exists(config_path) or not os.path.isdir(directory):
    raise ConfigError(f"init_from.workdir={workdir!r} holds no run (config.json and "
                      "checkpoints/ are needed)")
  with open(config_path, encoding="utf-8") as f:
    model = json.load(f)["model"]
  # Restored onto one device whatever mesh saved it, then as host (numpy) arrays.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler()) as manager:
    step = manager.latest_step()
    if step is None:
      raise ConfigError(f"init_from.workdir={workdir!r} has no checkpoint")
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step))
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  return model, jax.device_get(state["params"])


def initial_params(config: ml_collections.ConfigDict, task, model_config: ModelConfig,
                   state, shardings):
  """`state` with its params replaced per `config.init_from` (unchanged when unset)."""
  spec = config.get("init_from")
  if spec and spec.get("workdir") and spec.get("pretrained"):
    raise ConfigError("init_from: set workdir or pretrained, not both")
  if spec and spec.get("pretrained"):
    return _from_pretrained(spec, config.seed, model_config, state, shardings)
  if not spec or not spec.get("workdir"):
    return state
  source_model, params = source_params(spec["workdir"])
  if spec.get("encoder_only"):  # another task's run: its encoder, this run's head
    source = params
    for key in encoder_path(params):
      source = source[key]
    return _place_encoder(state, source, shardings, f"init_from.workdir={spec['workdir']!r}")
  source_ffn = dict(source_model.get("ffn") or {}).get("name", "mlp")
  if spec.get("upcycle", True) and model_config.spec("ffn")["name"] == "moe" != source_ffn:
    params = upcycle(params, task.model_config(source_model), model_config,
                     jax.random.PRNGKey(config.seed), spec.get("drop_fraction", 0.0))
  _check_shapes(params, state.params, f"init_from.workdir={spec['workdir']!r}")
  params = jax.tree.map(lambda p, s, a: jax.device_put(p.astype(a.dtype), s),
                        params, shardings.params, state.params)
  return state.replace(params=params)


def _check_shapes(have_tree, want_tree, what: str) -> None:
  have, want = _shapes(have_tree), _shapes(want_tree)
  wrong = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
  if wrong:
    raise ConfigError(f"{what}: parameters do not fit this model "
                      f"({wrong[0]}: {have.get(wrong[0])} vs {want.get(wrong[0])}"
                      f"{f' and {len(wrong) - 1} more' if len(wrong) > 1 else ''})")


def _from_pretrained(spec, seed: int, model_config: ModelConfig, state, shardings):
  """`state` with its encoder params from `init_from.pretrained` (head kept as initialised)."""
  what = f"init_from.pretrained={spec['pretrained']!r}"
  ckpt = pretrained.load(spec["pretrained"], scan_layers=model_config.scan_layers)
  source = ckpt.model
  upcycling = (spec.get("upcycle", True) and model_config.spec("ffn")["name"] == "moe"
               != source.spec("ffn")["name"])
  for field in ARCHITECTURE_FIELDS + (() if upcycling else ("ffn",)):
    if field == "type_vocab_size" and not source.type_vocab_size:
      continue  # a type table of this run's starts at zero (_place_encoder)
    if getattr(source, field) != getattr(model_config, field):
      raise ConfigError(f"{what}: model.{field}={getattr(model_config, field)!r} but the "
                        f"checkpoint has {getattr(source, field)!r} (pretrained.model_dict "
                        "gives its fields)")
  encoder = ckpt.params["encoder"]
  if upcycling:
    encoder = upcycle_encoder(encoder, source, model_config, jax.random.PRNGKey(seed),
                              spec.get("drop_fraction", 0.0))
  return _place_encoder(state, encoder, shardings, what)


def _place_encoder(state, encoder, shardings, what: str):
  """`state` with `encoder` in place of its encoder params (the head keeps its init)."""
  path = encoder_path(state.params)
  target = state.params
  for key in path:
    target = target[key]
  if "type_embed" in target and "type_embed" not in encoder:  # see the module docstring
    encoder = {**encoder, "type_embed": jax.tree.map(
        lambda a: np.zeros(a.shape, a.dtype), target["type_embed"])}
  _check_shapes(encoder, target, what)
  encoder = jax.tree.map(lambda p, a: p.astype(a.dtype), encoder, target)

  def replace(tree, keys):
    if not keys:
      return encoder
    return {**tree, keys[0]: replace(tree[keys[0]], keys[1:])}

  params = jax.device_put(replace(state.params, path), shardings.params)
  return state.replace(params=params)
