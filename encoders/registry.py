"""Name -> class tables for every interchangeable piece of the encoder.

A config names a variant and the rest of its sub-dict becomes constructor arguments:

    config.model.attention = dict(name="dense")
    build_spec("attention", config.model.attention)   # -> ("dense", {...kwargs})

Unknown names and unknown arguments fail at config time with one line that lists what is
allowed, long before anything is traced or compiled. `resolve_spec` fills in the defaults of
the options a spec leaves out (what a run records in its config.json).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from encoders import builtin_variants
from encoders.errors import ConfigError

# The variant kinds: one sub-dict of `config.model` each (ModelConfig fields of the same names).
KINDS = ("attention", "position", "norm", "ffn", "connection", "head")

_TABLES: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable[[type], type]:
  """Class decorator adding `cls` to the `kind` table under `name`."""
  if kind not in _TABLES:
    raise ConfigError(f"registry kind {kind!r} unknown; valid kinds: {', '.join(KINDS)}")

  def decorator(cls: type) -> type:
    table = _TABLES[kind]
    if name in table and table[name] is not cls:
      raise ConfigError(
          f"{kind} {name!r} registered twice ({table[name].__name__}, {cls.__name__})")
    table[name] = cls
    cls.registry_name = name
    return cls

  return decorator


def names(kind: str) -> tuple[str, ...]:
  """Sorted registered names of one kind."""
  _import_builtin_variants()
  return tuple(sorted(_TABLES[kind]))


def lookup(kind: str, name: str) -> type:
  """The class registered as `name`; raises listing the valid names otherwise."""
  _import_builtin_variants()
  table = _TABLES[kind]
  if name not in table:
    raise ConfigError(
        f"model.{kind}.name={name!r} is not a registered {kind}; valid: {', '.join(sorted(table))}")
  return table[name]


def constructor_fields(cls: type) -> tuple[str, ...]:
  """Fields a config may set on a registered Flax module: its dataclass fields except Flax
  internals and those the model itself sets (`cls.set_by_model`, e.g. a connection's depth)."""
  internal = ("parent", "name", "config", *getattr(cls, "set_by_model", ()))
  return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name not in internal)


def option_defaults(kind: str, name: str) -> dict[str, Any]:
  """Every option of the registered `kind` variant `name`, with its default value."""
  cls = lookup(kind, name)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  defaults = {}
  for option in constructor_fields(cls):
    field = fields[option]
    if field.default is not dataclasses.MISSING:
      defaults[option] = field.default
    elif field.default_factory is not dataclasses.MISSING:
      defaults[option] = field.default_factory()
  return defaults


def check_option(kind: str, name: str, option: str) -> None:
  """One-line error unless `option` is an option of the `kind` variant `name`."""
  allowed = constructor_fields(lookup(kind, name))
  if option not in allowed:
    raise ConfigError(f"model.{kind}.{option} is not an option of {kind} {name!r}; "
                      f"allowed: {', '.join(sorted(allowed)) or '(none)'}")


def checked_spec(kind: str, spec: Mapping[str, Any] | str) -> tuple[type, dict[str, Any]]:
  """Validates a `{name: ..., **kwargs}` spec; returns (class, kwargs).

  Every kwarg must be a constructor field of the class; anything else is a one-line error
  naming the offending field and the allowed ones.
  """
  spec = {"name": spec} if isinstance(spec, str) else dict(spec)
  if "name" not in spec:
    raise ConfigError(f"model.{kind} needs a 'name'; valid: {', '.join(names(kind))}")
  name = spec.pop("name")
  cls = lookup(kind, name)
  for option in sorted(spec):
    check_option(kind, name, option)
  return cls, spec


def resolve_spec(kind: str, spec: Mapping[str, Any] | str) -> dict[str, Any]:
  """The validated spec with every option of its variant, defaults filled in."""
  _, options = checked_spec(kind, spec)
  name = spec if isinstance(spec, str) else spec["name"]
  return {"name": name, **option_defaults(kind, name), **options}


def _import_builtin_variants() -> None:
  """Imports the modules whose @register lines fill the tables (named in
  encoders/builtin_variants.py, read by nothing else): by name, on the first lookup, so this
  module (which every variant imports for `register`) imports no variant, and importing
  encoders.config loads no family or kernel module."""
  for module in builtin_variants.FAMILIES:
    importlib.import_module(module)
