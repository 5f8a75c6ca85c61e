"""`ModelConfig`: the validated, hashable description of an encoder.

Built from the `model` sub-dict of an ml_collections config. Flax modules hold it as a field,
so it must be hashable: variant specs are stored as sorted tuples of (key, value) pairs, every
option of the variant included (the registered defaults of those the config leaves out, as
`resolve_model` fills them into the config.json a run writes).
Validation happens here, before anything is traced, with one-line errors naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from encoders import initializers, patterns, registry
from encoders.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
NORM_POSITIONS = ("pre", "post", "sandwich")
REMAT_POLICIES = ("none", "full", "dots_saveable")


def _freeze(value: Any) -> Any:
  if isinstance(value, Mapping):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


def _thaw(value: Any) -> Any:
  if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 and
                                      isinstance(p[0], str) for p in value) and value:
    return {k: _thaw(v) for k, v in value}
  return value


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every architectural choice of an Encoder (see configs/base.py for the comments)."""
  vocab_size: int
  max_length: int = 512
  dim: int = 256
  num_layers: int = 4
  num_heads: int = 4
  head_dim: int = 0  # 0 -> dim // num_heads
  mlp_dim: int = 1024
  embed_dim: int = 0  # embedding width; 0 -> dim (else projected to dim: ELECTRA's small models)
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  attention_output_dropout_rate: float | None = None  # None -> dropout_rate
  dtype: str = "float32"
  param_dtype: str = "float32"
  norm_position: str = "pre"
  embed_norm: bool = False
  type_vocab_size: int = 0
  init_std: float = 0.02
  init_method: str = "normal"  # normal | modernbert (encoders/initializers.py)
  skip_first_prenorm: bool = False  # layer 0's attention reads the normed embeddings directly
  scan_layers: bool = True
  remat: str = "none"
  use_bias: bool = True  # biases of the attention projections and the mlp/glu FFN layers
  attention: tuple = (("name", "dense"),)
  position: tuple = (("name", "learned"),)
  norm: tuple = (("name", "layernorm"),)
  ffn: tuple = (("name", "mlp"),)
  connection: tuple = (("name", "residual"),)
  head: tuple = (("name", "classification"),)
  layer_pattern: tuple = ()  # per-layer overrides cycled over the depth (encoders/patterns.py)

  def __post_init__(self):
    _validate(self)
    for kind in registry.KINDS:  # every option stored, defaults included: equal specs compare equal
      object.__setattr__(self, kind, _freeze(registry.resolve_spec(kind, self.spec(kind))))
    # Stored canonical (shortest period, full specs): equal layers compare equal to no pattern.
    base = {kind: self.spec(kind) for kind in patterns.PATTERN_KINDS}
    object.__setattr__(self, "layer_pattern", _freeze(patterns.canonical(
        base, self.pattern_entries(), self.num_layers)))

  @classmethod
  def from_dict(cls, model: Mapping[str, Any]) -> ModelConfig:
    """From the `config.model` sub-dict; unknown keys are a one-line error."""
    model = dict(model)
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(model) - set(allowed))
    if unknown:
      raise ConfigError(f"model.{unknown[0]} is not a model field; allowed: {', '.join(allowed)}")
    if "vocab_size" not in model:
      raise ConfigError("model.vocab_size must be set (the task usually sets it from its data)")
    return cls(**{k: _freeze(v) for k, v in model.items()})

  def spec(self, kind: str) -> dict[str, Any]:
    """The `{name: ..., **kwargs}` dict of one variant kind."""
    return _thaw(getattr(self, kind))

  def pattern_entries(self) -> tuple[dict[str, dict[str, Any]], ...]:
    """`layer_pattern` as dicts (kind -> spec); see encoders/patterns.py."""
    if not isinstance(self.layer_pattern, tuple):
      return self.layer_pattern  # not frozen: patterns.canonical reports it
    return tuple({kind: _thaw(spec) for kind, spec in entry} if isinstance(entry, tuple)
                 else entry for entry in self.layer_pattern)

  def build(self, kind: str, **extra) -> Any:
    """Instantiates the registered `kind` variant (an unbound Flax module)."""
    cls, kwargs = registry.checked_spec(kind, self.spec(kind))
    return cls(config=self, **kwargs, **extra)

  def variant_class(self, kind: str) -> type:
    """The registered class of the `kind` variant (its class attributes: `where`, ...)."""
    return registry.checked_spec(kind, self.spec(kind))[0]

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.dim // self.num_heads

  @property
  def embed_width(self) -> int:
    return self.embed_dim or self.dim

  @property
  def attention_output_dropout(self) -> float:
    """Dropout on the attention sub-layer's output (`dropout_rate` unless set apart)."""
    if self.attention_output_dropout_rate is None:
      return self.dropout_rate
    return self.attention_output_dropout_rate

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def params_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **{k: _freeze(v) for k, v in changes.items()})


def resolve_model(model: Mapping[str, Any]) -> dict[str, Any]:
  """The `config.model` dict with each variant sub-dict validated and completed with the
  defaults of the options it leaves out, and each `layer_pattern` entry's specs merged into
  full ones: what a run builds and records in its config.json."""
  out = {**model, **{kind: registry.resolve_spec(kind, model[kind])
                     for kind in registry.KINDS if kind in model}}
  if model.get("layer_pattern"):
    base = {kind: out.get(kind, {"name": _DEFAULT_NAMES[kind]}) for kind in patterns.PATTERN_KINDS}
    base = {kind: registry.resolve_spec(kind, spec) for kind, spec in base.items()}
    out["layer_pattern"] = tuple(
        {kind: patterns.merge(kind, base[kind], spec, f"model.layer_pattern[{i}]")
         for kind, spec in entry.items()}
        for i, entry in enumerate(patterns.checked_entries(model["layer_pattern"],
                                                           model.get("num_layers", 1))))
  return out


_DEFAULT_NAMES = {f.name: dict(f.default)["name"] for f in dataclasses.fields(ModelConfig)
                  if f.name in registry.KINDS}


def _validate(c: ModelConfig) -> None:
  for field in ("vocab_size", "max_length", "dim", "num_layers", "num_heads", "mlp_dim"):
    value = getattr(c, field)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"model.{field}={value!r} must be a positive integer")
  if not isinstance(c.embed_dim, int) or c.embed_dim < 0:
    raise ConfigError(f"model.embed_dim={c.embed_dim!r} must be 0 (= dim) or a positive integer")
  if c.head_dim == 0 and c.dim % c.num_heads:
    raise ConfigError(f"model.dim={c.dim} must be divisible by model.num_heads={c.num_heads} "
                     "(or set model.head_dim)")
  for field in ("dropout_rate", "attention_dropout_rate", "attention_output_dropout_rate"):
    value = getattr(c, field)
    if not (value is None and field == "attention_output_dropout_rate") and not (
        isinstance(value, (int, float)) and 0.0 <= value < 1.0):
      raise ConfigError(f"model.{field}={value!r} must be in [0, 1)")
  if c.init_method not in initializers.INIT_METHODS:
    raise ConfigError(f"model.init_method={c.init_method!r}; "
                      f"allowed: {', '.join(initializers.INIT_METHODS)}")
  if c.skip_first_prenorm and (c.norm_position == "post" or not c.embed_norm):
    raise ConfigError("model.skip_first_prenorm=True needs model.norm_position='pre' or "
                      "'sandwich' and model.embed_norm=True (layer 0 then reads normed embeddings)")
  for field in ("dtype", "param_dtype"):
    if getattr(c, field) not in DTYPES:
      raise ConfigError(f"model.{field}={getattr(c, field)!r}; allowed: {', '.join(DTYPES)}")
  if c.remat not in REMAT_POLICIES:
    raise ConfigError(f"model.remat={c.remat!r}; allowed: {', '.join(REMAT_POLICIES)}")
  if c.norm_position not in NORM_POSITIONS:
    raise ConfigError(f"model.norm_position={c.norm_position!r}; "
                      f"allowed: {', '.join(NORM_POSITIONS)}")
  for kind in registry.KINDS:
    registry.checked_spec(kind, c.spec(kind))
