"""Layer patterns: per-layer overrides of the variant sub-dicts, cycled over the depth.

`model.layer_pattern = (entry_0, ..., entry_{P-1})` builds block i from `model` with
entry_{i mod P} applied; an entry maps a per-layer kind (attention, position, norm, ffn) to a
partial spec. A spec with the model's variant name (or no name) changes only the options it
lists; one naming another variant replaces the spec (its other options take their defaults).
The ModernBERT stack (Warner et al. 2024, "Smarter, Better, Faster, Longer") is

    model.attention = dict(name="local", window_tokens=64, block_size=64)
    model.position = dict(name="rope", base=10_000.0)
    model.layer_pattern = ({"attention": {"name": "dense"}, "position": {"base": 160_000.0}},
                           {}, {})

MoE every k-th block (`model.ffn.every = k`, GShard / Switch Transformer) is one case of it:
k entries, the first k - 1 replacing the MoE by the dense FFN of its expert type; a configured
pattern applies on top (the group is the lcm of both lengths).

The stored pattern (`ModelConfig.layer_pattern`) is canonical: its shortest period, each entry
holding the full spec of every kind that differs from the model's anywhere in the group, and
() when every layer is the model itself. So a pattern of equal entries *is* the uniform model
(same parameter tree, same values), and the scanned Encoder scans the group of
`period(config)` blocks num_layers / period times: compile time grows with the group, not with
the depth. Every mistake (length not dividing num_layers, unknown kind, option or variant) is a
one-line ConfigError naming `model.layer_pattern[i]`, raised when the ModelConfig is built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from encoders import registry
from encoders.errors import ConfigError

PATTERN_KINDS = ("attention", "position", "norm", "ffn")


def moe_every(ffn: Mapping[str, Any], num_layers: int) -> int:
  """`model.ffn.every` of an MoE FFN (checked: an integer >= 1 dividing num_layers), else 1."""
  if ffn["name"] != "moe":
    return 1
  k = ffn.get("every", 1)
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ConfigError(f"model.ffn.every={k!r} must be an integer >= 1")
  if num_layers % k:
    raise ConfigError(f"model.ffn.every={k} must divide model.num_layers={num_layers}")
  return k


def dense_ffn_spec(ffn: Mapping[str, Any]) -> dict[str, Any]:
  """The dense FFN of an MoE model's non-MoE blocks: the experts' type and activation."""
  return {"name": ffn.get("expert", "mlp"), "activation": ffn.get("activation", "gelu")}


def moe_entries(ffn: Mapping[str, Any], num_layers: int) -> list[dict[str, Any]]:
  """`model.ffn.every = k` as a pattern: k - 1 dense-FFN entries, then the MoE block."""
  k = moe_every(ffn, num_layers)
  return [{"ffn": dense_ffn_spec(ffn)}] * (k - 1) + [{}]


def checked_entries(pattern: Any, num_layers: int) -> list[dict[str, dict[str, Any]]]:
  """The configured pattern as checked dicts (kind -> partial spec)."""
  if not isinstance(pattern, (tuple, list)):
    raise ConfigError(f"model.layer_pattern={pattern!r} must be a tuple of dicts "
                      f"(kind -> options; kinds: {', '.join(PATTERN_KINDS)})")
  if pattern and num_layers % len(pattern):
    raise ConfigError(f"model.layer_pattern has {len(pattern)} entries, which must divide "
                      f"model.num_layers={num_layers}")
  entries = []
  for i, entry in enumerate(pattern):
    if not isinstance(entry, Mapping):
      raise ConfigError(f"model.layer_pattern[{i}]={entry!r} must be a dict (kind -> options)")
    for kind, spec in entry.items():
      if kind not in PATTERN_KINDS:
        raise ConfigError(f"model.layer_pattern[{i}].{kind} is not a per-layer kind; allowed: "
                          f"{', '.join(PATTERN_KINDS)}")
      if not isinstance(spec, Mapping):
        raise ConfigError(f"model.layer_pattern[{i}].{kind}={spec!r} must be a dict of options")
    entries.append({kind: dict(spec) for kind, spec in entry.items()})
  return entries


def merge(kind: str, spec: Mapping[str, Any], override: Mapping[str, Any],
          where: str) -> dict[str, Any]:
  """`override` applied to the full `spec`: same (or no) name -> options changed, another
  name -> replaced. Errors are prefixed with `where` (e.g. "model.layer_pattern[1]")."""
  name = override.get("name", spec["name"])
  merged = dict(override) if name != spec["name"] else {**spec, **override}
  try:
    resolved = registry.resolve_spec(kind, merged)
    if kind == "position" and registry.lookup(kind, name).where == "embeddings":
      raise ConfigError(f"model.position.name={name!r} acts once on the embeddings; per layer "
                        "only variants inside attention: " + ", ".join(
                            n for n in registry.names(kind)
                            if registry.lookup(kind, n).where != "embeddings"))
  except ConfigError as error:
    raise ConfigError(f"{where}: {error}") from None
  return resolved


def expand(base: Mapping[str, Mapping[str, Any]], pattern: Any,
           num_layers: int) -> list[dict[str, dict[str, Any]]]:
  """The full per-kind specs of the blocks of one group (MoE entries, then the pattern's)."""
  entries = checked_entries(pattern, num_layers) or [{}]
  moe = moe_entries(base["ffn"], num_layers)
  layers = []
  for r in range(math.lcm(len(entries), len(moe))):
    specs = {kind: dict(base[kind]) for kind in PATTERN_KINDS}
    for override, where in ((moe[r % len(moe)], "model.ffn.every"),
                            (entries[r % len(entries)],
                             f"model.layer_pattern[{r % len(entries)}]")):
      for kind, spec in override.items():
        specs[kind] = merge(kind, specs[kind], spec, where)
    layers.append(specs)
  return layers


def canonical(base: Mapping[str, Mapping[str, Any]], pattern: Any,
              num_layers: int) -> tuple[dict[str, dict[str, Any]], ...]:
  """The shortest period of the expanded group, each entry holding the full specs of the kinds
  that differ from `base` somewhere in it; () when every layer is `base`."""
  layers = expand(base, pattern, num_layers)
  size = len(layers)
  period = next(p for p in range(1, size + 1)
                if size % p == 0 and all(layers[r] == layers[r % p] for r in range(size)))
  varying = [kind for kind in PATTERN_KINDS
             if any(layer[kind] != base[kind] for layer in layers[:period])]
  if not varying:
    return ()
  return tuple({kind: layer[kind] for kind in varying} for layer in layers[:period])


def period(config) -> int:
  """Blocks per scanned group: the length of the canonical pattern (1 if uniform)."""
  return max(1, len(config.layer_pattern))


@functools.lru_cache(maxsize=1024)
def layer_config(config, layer: int):
  """The ModelConfig block `layer` is built from: `config` with its group's entry applied
  (the pattern kept, so that a layer config expands to the same group)."""
  entries = config.pattern_entries()
  if not entries:
    return config
  return config.replace(**entries[layer % len(entries)])
