"""Start a run from another run's parameters: `config.init_from` (configs/base.py).

    config.init_from = dict(workdir="runs/dense", upcycle=True, drop_fraction=0.0)

Used only when the run's own workdir has no checkpoint (a resumed run continues from its own).
Reads the source run's `config.json` and its latest Orbax checkpoint, and takes its
parameters; with `upcycle=True` (default) a dense source becomes this run's MoE model when
this run's FFN is `moe` (encoders/moe/upcycle.py: Sparse Upcycling, optionally
Drop-Upcycling); otherwise the parameters are used as they are (same shapes required). The
optimizer state and step start fresh. The encoder is found at params['encoder'] or
params['discriminator']['encoder'] (ELECTRA).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.moe.upcycle import upcycle


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
  if not spec or not spec.get("workdir"):
    return state
  source_model, params = source_params(spec["workdir"])
  source_ffn = dict(source_model.get("ffn") or {}).get("name", "mlp")
  if spec.get("upcycle", True) and model_config.spec("ffn")["name"] == "moe" != source_ffn:
    params = upcycle(params, task.model_config(source_model), model_config,
                     jax.random.PRNGKey(config.seed), spec.get("drop_fraction", 0.0))
  have, want = _shapes(params), _shapes(state.params)
  wrong = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
  if wrong:
    raise ConfigError(f"init_from.workdir={spec['workdir']!r}: parameters do not fit this model "
                      f"({wrong[0]}: {have.get(wrong[0])} vs {want.get(wrong[0])}"
                      f"{f' and {len(wrong) - 1} more' if len(wrong) > 1 else ''})")
  params = jax.tree.map(lambda p, s, a: jax.device_put(p.astype(a.dtype), s),
                        params, shardings.params, state.params)
  return state.replace(params=params)
