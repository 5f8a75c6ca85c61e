"""Command-line overrides of variant options, including those the config file leaves out.

ml_collections only overrides keys a config already has, but a variant sub-dict lists just the
options its file sets (`model.attention = dict(name="dense")`). So `experiments.main` takes the
`--config.model.<kind>.<key>=VALUE` flags (kind: attention, position, norm, ffn, connection,
head) and `--config.train.aux_loss_weights.<loss>=VALUE` out of argv (not out of a
--flagfile) before absl parses it (`split`), and applies them to the loaded config afterwards
(`apply`):

1. each kind's `name`, whatever its place on the command line; a name changed there drops the
   file's options that belong to other variants of that kind (a typo is still an error);
2. each option, checked against the registry (unknown: the one-line error listing the allowed
   options) and typed like its registered default: int, float, bool (true/false/1/0),
   str, tuple (a Python literal, `'(0, 5)'`; one value is a 1-tuple); an option whose default
   is None takes a Python literal or else the text (`none` = None).

The run then fills in the defaults of every option left out (`encoders.config.resolve_model`)
and records them in config.json.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags

from encoders import registry
from encoders.errors import ConfigError
from encoders.needs import declared_aux_losses

_FLAG = re.compile(r"--config\.(model\.(?:" + "|".join(registry.KINDS) +
                   r")|train\.aux_loss_weights)\.(\w+)=(.*)", re.DOTALL)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def split(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(argv for absl without the flags handled here, [(dotted field, value text)] in order)."""
  rest, taken = [], []
  for arg in argv:
    match = _FLAG.fullmatch(arg)
    if match:
      taken.append((f"{match[1]}.{match[2]}", match[3]))
    else:
      rest.append(arg)
  return rest, taken


def parse_value(field: str, text: str, default: Any) -> Any:
  """`text` as the type of `default` (one-line ConfigError naming the field otherwise)."""
  try:
    if isinstance(default, bool):
      if text.lower() not in _TRUE + _FALSE:
        raise ValueError
      return text.lower() in _TRUE
    if isinstance(default, (int, float, str)):
      return type(default)(text)
    if isinstance(default, (tuple, list)):
      value = ast.literal_eval(text)
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  except (ValueError, SyntaxError):
    raise ConfigError(f"{field}={text!r} is not a valid {type(default).__name__} (the "
                      f"option's default is {default!r})") from None
  if text.lower() == "none":
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _rename(spec: ml_collections.ConfigDict, kind: str, name: str) -> None:
  """Sets the variant name; drops the file's options that belong to other variants."""
  allowed = registry.constructor_fields(registry.lookup(kind, name))
  others = {option for other in registry.names(kind)
            for option in registry.constructor_fields(registry.lookup(kind, other))}
  with spec.unlocked():
    spec.name = name
    for option in [o for o in spec if o != "name" and o not in allowed and o in others]:
      del spec[option]


def apply(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
  """Applies `split`'s overrides to the loaded config: names first, then options."""
  for field, text in overrides:
    parent, key = field.rsplit(".", 1)
    if parent.startswith("model.") and key == "name":
      _rename(_sub_dict(config, parent), parent.split(".")[1], text)
  for field, text in overrides:
    parent, key = field.rsplit(".", 1)
    node = _sub_dict(config, parent)
    if parent.startswith("model.") and key == "name":
      continue
    if parent.startswith("model."):
      kind, name = parent.split(".")[1], node.get("name")
      registry.check_option(kind, name, key)
      default = registry.option_defaults(kind, name).get(key)
      value = parse_value(field, text, node[key] if default is None and key in node else default)
    else:
      if key not in declared_aux_losses():
        raise ConfigError(f"{field} is not an aux loss; allowed: "
                          f"{', '.join(declared_aux_losses())}")
      value = parse_value(field, text, 1.0)
    with node.unlocked():
      if key in node:
        del node[key]  # the value takes its registered type, whatever the file had
      node[key] = value


def _sub_dict(config: ml_collections.ConfigDict, dotted: str) -> ml_collections.ConfigDict:
  node = config
  for key in dotted.split("."):
    if key not in node or not isinstance(node[key], ml_collections.ConfigDict):
      raise ConfigError(f"--config.{dotted}: the config file has no such sub-dict; set it there "
                        "as a dict")
    node = node[key]
  return node


def parse_flags(argv: list[str], argv_sink: list[str],
                overrides_sink: list[tuple[str, str]]) -> list[str]:
  """absl flag parsing for a CLI with a `config_flags` config read from `argv_sink`: the
  variant options are split off into `overrides_sink` (for `apply` once the config is loaded),
  and a config override mistake is reported in one line (exit 2)."""
  argv, variant_overrides = split(argv)
  argv_sink[:], overrides_sink[:] = argv, variant_overrides
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    detail = error
    while isinstance(detail, BaseException) and detail.args:
      detail = detail.args[0]
    detail = " ".join(str(detail).replace("\\n", " ").split())
    where = f" (one of: {', '.join(given)})" if given else ""
    print(f"error: bad command-line flag{where}: {detail}", file=sys.stderr)
    sys.exit(2)
