"""What every checkpoint family shares: one HF tensor <-> one or more of our parameters.

A `Tensor` names an HF tensor, the paths of our parameters it becomes (a fused HF tensor, e.g.
ModernBERT's Wqkv, becomes several) and the `kind` of reshaping. Paths that start with
("layer", i) lie inside block i; `place_layers` puts the blocks where our Encoder keeps them:
on a leading `layers` axis when it scans them (per pattern group member `block_<r>` when the
layer pattern has a period k > 1, encoders/patterns.py), else as `blocks_<i>`.

Torch `Linear` weights are [out, in]; our kernels are [in, out] with heads split out
([dim, heads, head_dim] for q/k/v, [heads, head_dim, dim] for the attention output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from encoders import patterns
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig


class CheckpointMismatch(ConfigError):
  """The checkpoint's tensors do not match the model: names the unknown and missing ones."""


@dataclasses.dataclass(frozen=True)
class Tensor:
  hf: str
  ours: tuple[tuple, ...]  # our parameter paths (one, or several for a fused HF tensor)
  kind: str = "same"  # same | linear | qkv | heads | out | rows_after_<n> | <kind>_x<parts>


def _split_kind(kind: str) -> tuple[str, int]:
  base, _, parts = kind.partition("_x")
  return base, int(parts or 1)


def to_ours(w: np.ndarray, t: Tensor, c: ModelConfig) -> list[np.ndarray]:
  """The HF tensor `w` as our parameters, one per path of `t`."""
  base, parts = _split_kind(t.kind)
  pieces = np.split(w, parts, axis=0) if parts > 1 else [w]
  heads, head_dim = c.num_heads, c.resolved_head_dim
  out = []
  for piece in pieces:
    if base == "qkv":
      piece = piece.T.reshape(c.dim, heads, head_dim)
    elif base == "heads":
      piece = piece.reshape(heads, head_dim)
    elif base == "out":
      piece = piece.T.reshape(heads, head_dim, c.dim)
    elif base == "linear":
      piece = piece.T
    elif base.startswith("rows_after_"):
      piece = piece[int(base[len("rows_after_"):]):]
    out.append(np.asarray(piece, np.float32))
  return out


def to_hf(values: list[np.ndarray], t: Tensor) -> np.ndarray:
  """Our parameters (one per path of `t`) as the HF tensor."""
  base, _ = _split_kind(t.kind)
  pieces = []
  for w in values:
    w = np.asarray(w, np.float32)
    if base == "qkv":  # [dim, heads, head_dim] -> [heads * head_dim, dim]
      w = w.reshape(w.shape[0], -1).T
    elif base == "out":  # [heads, head_dim, dim] -> [dim, heads * head_dim]
      w = w.reshape(-1, w.shape[-1]).T
    elif base == "heads":
      w = w.reshape(-1)
    elif base == "linear":
      w = w.T
    elif base.startswith("rows_after_"):  # rows no real token reads (RoBERTa's padding rows)
      w = np.concatenate([np.zeros((int(base[len("rows_after_"):]), w.shape[1]), w.dtype), w])
    pieces.append(w)
  return np.ascontiguousarray(np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0])


def set_path(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def get_path(tree: Mapping, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def scanned(c: ModelConfig) -> bool:
  """Whether the Encoder scans its blocks (as encoders.model.Encoder.scanned)."""
  return c.scan_layers and c.variant_class("connection").reads != "all"


def stack(trees: list[dict]) -> dict:
  first = trees[0]
  return {k: stack([t[k] for t in trees]) if isinstance(first[k], Mapping)
          else np.stack([t[k] for t in trees]) for k in first}


def place_layers(layers: list[dict], c: ModelConfig, is_scanned: bool) -> dict:
  """Per-layer block trees -> the Encoder's `blocks` entries."""
  if not is_scanned:
    return {f"blocks_{i}": block for i, block in enumerate(layers)}
  k = patterns.period(c)
  if k == 1:
    return {"blocks": stack(layers)}
  return {"blocks": {f"block_{r}": stack(layers[r::k]) for r in range(k)}}


def layer_tree(params: Mapping, c: ModelConfig, i: int) -> Mapping:
  """Block i's parameters from the Encoder's params (scanned or not)."""
  if "blocks" not in params:
    return params[f"blocks_{i}"]
  k = patterns.period(c)
  blocks = params["blocks"] if k == 1 else params["blocks"][f"block_{i % k}"]
  index = i // k

  def pick(tree):
    return {key: pick(v) if isinstance(v, Mapping) else np.asarray(v)[index]
            for key, v in tree.items()}

  return pick(blocks)


def read(weights: Mapping[str, np.ndarray], table: list[Tensor], c: ModelConfig,
         is_scanned: bool, shapes: Mapping | None = None) -> dict:
  """Our params from HF tensors (all of `table` present), blocks placed. `shapes`: the
  unscanned parameter tree's shapes (`blocks_<i>`); a tensor that does not fit is a
  CheckpointMismatch naming it."""
  params: dict = {}
  layers = [{} for _ in range(c.num_layers)]
  for t in table:
    wheres = [(f"blocks_{p[1]}",) + p[2:] if p[0] == "layer" else p for p in t.ours]

    def mismatch(t=t, wheres=wheres):
      want = ", ".join(f"{'/'.join(map(str, w))} {tuple(get_path(shapes, w))}" for w in wheres)
      return CheckpointMismatch(
          f"checkpoint tensor {t.hf} has shape {tuple(np.shape(weights[t.hf]))}, which does "
          f"not fit {want} of the model its config.json describes")

    try:
      values = to_ours(np.asarray(weights[t.hf]), t, c)
    except ValueError:
      raise mismatch() from None
    for path, where, value in zip(t.ours, wheres, values):
      if shapes is not None and value.shape != tuple(get_path(shapes, where)):
        raise mismatch()
      if path[0] == "layer":
        set_path(layers[path[1]], path[2:], value)
      else:
        set_path(params, path, value)
  if any(layers):
    params.update(place_layers(layers, c, is_scanned))
  return params


def write(params: Mapping, table: list[Tensor], c: ModelConfig) -> dict[str, np.ndarray]:
  """HF tensors from our params (scanned or not)."""
  layers: dict[int, Mapping] = {}

  def value(path):
    if path[0] != "layer":
      return get_path(params, path)
    if path[1] not in layers:
      layers[path[1]] = layer_tree(params, c, path[1])
    return get_path(layers[path[1]], path[2:])

  return {t.hf: to_hf([np.asarray(value(p)) for p in t.ours], t) for t in table}


def check_names(body: Mapping, expected: list[str], c: ModelConfig) -> None:
  """One CheckpointMismatch listing the unknown and the missing tensors, if any."""
  unknown, missing = sorted(set(body) - set(expected)), sorted(set(expected) - set(body))
  if unknown or missing:
    raise CheckpointMismatch(
        f"checkpoint does not match model (dim={c.dim}, num_layers={c.num_layers}): "
        f"unknown weights: {', '.join(unknown) or '(none)'}; "
        f"missing weights: {', '.join(missing) or '(none)'}")
