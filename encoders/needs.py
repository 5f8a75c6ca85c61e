"""What a model's variants ask of the runner, collected over its expanded layer pattern.

The runner (experiments/) trains any model without knowing its variants: each registered class
declares what it needs, and `model_needs(config)` collects the declarations of every block's
variants (`patterns.layer_config`, so a hybrid stack's `s4d` layers count, not only the base
spec) and of the model-wide ones:

- `parameter_groups()` (an instance method: groups may depend on options): `ParameterGroup`s of
  the variant's own parameters, each a set of paths inside its module with a learning-rate rule
  (`LearningRate`) and/or a weight-decay choice. Parameters no group names decay if they are
  named `kernel` or `embedding` (BERT's rule) and learn at the run's rate;
- `aux_losses` / `aux_metrics` (class attributes): the `*_loss` entries its aux dict may hold
  (`train.aux_loss_weights` keys) and the metrics it reports;
- `supports_segments` / `max_segments`: whether (and how many) packed segments per row it keeps
  apart; `accepts_positions`: the position variants' `where` values it can apply.

Parameter paths follow encoders/model.py's names: block i's parameters live under `blocks_{i}`
(unrolled), `blocks` (scanned, one block per step) or `blocks/block_{r}` (scanned groups of the
pattern's period), then the kind (`attention`, `ffn`, ...), then the variant's own path.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from encoders import patterns, registry
from encoders.errors import ConfigError

if TYPE_CHECKING:
  from encoders.config import ModelConfig

LR_RULES = ("ratio", "cap", "absolute")
DECAYED_LEAVES = ("kernel", "embedding")  # the default rule: weights decay, biases/norms do not
_BLOCK = re.compile(r"blocks(?:_(\d+))?$")
_GROUP_BLOCK = re.compile(r"block_(\d+)$")


@dataclasses.dataclass(frozen=True)
class LearningRate:
  """A parameter group's learning rate as a multiple of the run's schedule.

  `ratio`: `value` x the run's rate (the schedule scaled); `cap`: min(peak, value), S4's
  `lr=min(0.001, args.lr)` (Gu et al. 2022, state-spaces/s4 `example.py`); `absolute`: `value`
  whatever the run's peak, S5's `ssm_lr_base` (Smith et al. 2023, lindermanlab/S5). The group
  follows the run's schedule shape in all three (both references anneal every group alike).
  `field` names the option in errors."""
  rule: str
  value: float
  field: str = "lr"

  def __post_init__(self):
    if self.rule not in LR_RULES:
      raise ConfigError(f"{self.field}: learning-rate rule {self.rule!r}; allowed: "
                        f"{', '.join(LR_RULES)}")
    if not self.value > 0:
      raise ConfigError(f"{self.field}={self.value!r} must be positive")

  def multiplier(self, peak: float) -> float:
    """The factor on the run's updates for a run whose (peak or base) rate is `peak`."""
    if self.rule == "ratio":
      return float(self.value)
    if not peak > 0:
      raise ConfigError(f"train.learning_rate={peak!r} must be positive with a {self.rule} "
                        f"learning-rate rule ({self.field})")
    rate = min(peak, self.value) if self.rule == "cap" else self.value
    return float(rate / peak)


@dataclasses.dataclass(frozen=True)
class ParameterGroup:
  """Parameters of one variant, by `fnmatch` patterns of their '/'-joined path inside the
  variant's module (e.g. `log_dt`, `*/a_log`, `filter/*`); `learning_rate` None and `decay`
  None keep the defaults."""
  paths: tuple[str, ...]
  learning_rate: LearningRate | None = None
  decay: bool | None = None

  def matches(self, relative: str) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in self.paths)


@dataclasses.dataclass(frozen=True)
class Segments:
  """Whether packed rows may reach the model: `supported`, at most `limit` segments per row
  (None: any), `by` the variant (and its field) that decides."""
  supported: bool = True
  limit: int | None = None
  by: str = ""  # the attention variant's name


@dataclasses.dataclass(frozen=True)
class ModelNeeds:
  """The collected declarations of one ModelConfig's variants (see the module doc)."""
  layer_groups: tuple[dict[str, tuple[ParameterGroup, ...]], ...]  # per layer of the period
  aux_losses: tuple[str, ...]
  aux_metrics: tuple[str, ...]
  segments: Segments

  def group_of(self, keys: Sequence[str]) -> ParameterGroup | None:
    """The group of the parameter at dict-key path `keys` (a logical box's trailing `value`
    dropped), None for parameters outside every group."""
    keys = [k for k in keys if k != "value"] if keys and keys[-1] == "value" else list(keys)
    for i, key in enumerate(keys):
      match = _BLOCK.match(key)
      if not match:
        continue
      layer, rest = int(match[1] or 0), keys[i + 1:]
      inner = _GROUP_BLOCK.match(rest[0]) if match[1] is None and rest else None
      if inner:
        layer, rest = int(inner[1]), rest[1:]
      if len(rest) < 2:
        return None
      groups = self.layer_groups[layer % len(self.layer_groups)].get(rest[0], ())
      relative = "/".join(rest[1:])
      return next((g for g in groups if g.matches(relative)), None)
    return None

  def learning_rate(self, keys: Sequence[str]) -> LearningRate | None:
    group = self.group_of(keys)
    return None if group is None else group.learning_rate

  def decays(self, keys: Sequence[str]) -> bool:
    """Whether weight decay applies: the group's choice, else the default rule."""
    group = self.group_of(keys)
    if group is not None and group.decay is not None:
      return group.decay
    return default_decays(keys)


def default_decays(keys: Sequence[str]) -> bool:
  """BERT's rule: kernels and embeddings decay, biases and norm scales do not."""
  names = [k for k in keys if k != "value"]
  return bool(names) and names[-1] in DECAYED_LEAVES


def model_needs(config: ModelConfig) -> ModelNeeds:
  """The declarations of every block's variants (over one period of the expanded pattern)
  and of the model-wide ones (head, connection: aux entries only, their parameters keep the
  defaults); raises for a position variant a block's mixer cannot apply."""
  layers, variants = [], [config.build(kind) for kind in ("head", "connection")]
  segments = Segments()
  for r in range(patterns.period(config)):
    layer = patterns.layer_config(config, r)
    built = {kind: layer.build(kind) for kind in patterns.PATTERN_KINDS}
    variants += built.values()
    layers.append({kind: tuple(getattr(variant, "parameter_groups", tuple)())
                   for kind, variant in built.items()})
    segments = _narrower(segments, layer)
    _check_positions(layer, r)
  losses, metrics = [], []
  for variant in variants:
    losses += [n for n in getattr(variant, "aux_losses", ()) if n not in losses]
    metrics += [n for n in getattr(variant, "aux_metrics", ()) if n not in metrics]
  return ModelNeeds(tuple(layers), tuple(losses), tuple(metrics), segments)


def _narrower(segments: Segments, layer: ModelConfig) -> Segments:
  name = layer.spec("attention")["name"]
  attention = layer.build("attention")
  if not segments.supported:
    return segments
  if not attention.supports_segments:
    return Segments(False, None, name)
  limit = getattr(attention, "max_segments", None)
  if limit is not None and (segments.limit is None or limit < segments.limit):
    return Segments(True, limit, name)
  return segments


def _check_positions(layer: ModelConfig, r: int) -> None:
  where = layer.variant_class("position").where
  attention = layer.variant_class("attention")
  accepted = getattr(attention, "accepts_positions", None)
  if accepted is not None and where not in accepted:
    at = f" (layer {r} of the pattern)" if layer.layer_pattern else ""
    raise ConfigError(f"model.position.name={layer.spec('position')['name']!r} acts on "
                      f"attention scores, which token mixer {attention.registry_name!r} has "
                      f"none of{at}; use learned or sinusoidal")


def declared_aux_losses() -> tuple[str, ...]:
  """Every `*_loss` aux entry any registered variant declares (what
  `train.aux_loss_weights` may name before the model is known)."""
  return _declared("aux_losses")


def _declared(attribute: str) -> tuple[str, ...]:
  names: list[str] = []
  for kind in registry.KINDS:
    for name in registry.names(kind):
      names += [n for n in getattr(registry.lookup(kind, name), attribute, ()) if n not in names]
  return tuple(names)


def option_learning_rate(variant: Any, prefix: str = "model.attention") -> LearningRate:
  """The SSM mixers' `lr_rule` / `lr_ratio` / `ssm_lr` options as a `LearningRate`."""
  if variant.lr_rule not in LR_RULES:
    raise ConfigError(f"{prefix}.lr_rule={variant.lr_rule!r}; allowed: {', '.join(LR_RULES)}")
  if variant.lr_rule == "ratio":
    return LearningRate("ratio", variant.lr_ratio, f"{prefix}.lr_ratio")
  return LearningRate(variant.lr_rule, variant.ssm_lr, f"{prefix}.ssm_lr")
