"""Optimizer: AdamW (Loshchilov & Hutter 2019) with warmup then cosine, linear or (LRA's) rsqrt
decay, and global-norm gradient clipping. Weight decay applies to kernels and embeddings only
(not to biases or norm scales), as in BERT. State space parameters (`SSM_PARAMETERS` of
encoders/mixers/ssm.py: S4D's and S5's step sizes, A / Lambda, S5's B) take no weight decay
and learn at the mixer's `lr_ratio` times the learning rate, as the S4 and S5 references do;
the scaling adds no optimizer state, so checkpoints of other models keep their layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from encoders import registry
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.mixers.ssm import SSM_PARAMETERS

SCHEDULES = ("cosine", "linear", "constant", "rsqrt")


def rsqrt_schedule(base: float, warmup_steps: int) -> optax.Schedule:
  """LRA's "constant * linear_warmup * rsqrt_decay" (Tay et al. 2021, `lra_benchmarks/utils/
  train_utils.py`; the Transformer's schedule, Vaswani et al. 2017): base * min(1, step /
  warmup) / sqrt(max(step, warmup)), so the peak is base / sqrt(warmup) at step `warmup`.
  LRA's text and retrieval runs warm up for 8,000 steps, longer than retrieval's 5,000, so
  `warmup_steps` may exceed `num_steps` here."""
  if warmup_steps < 1:
    raise ConfigError(f"train.warmup_steps={warmup_steps} must be >= 1 with "
                      "train.schedule='rsqrt'")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return base * jnp.minimum(1.0, step / warmup_steps) * jax.lax.rsqrt(
        jnp.maximum(step, float(warmup_steps)))

  return schedule


def learning_rate_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to `t.learning_rate` over `t.warmup_steps`, then decay to
  `t.learning_rate * t.end_lr_fraction` at `t.num_steps`; or LRA's `rsqrt` schedule."""
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"train.schedule={t.schedule!r}; allowed: {', '.join(SCHEDULES)}")
  if t.schedule == "rsqrt":
    return rsqrt_schedule(t.learning_rate, t.warmup_steps)
  if not 0 <= t.warmup_steps <= t.num_steps:
    raise ConfigError(f"train.warmup_steps={t.warmup_steps} must be in [0, train.num_steps]")
  peak, end = t.learning_rate, t.learning_rate * t.end_lr_fraction
  warmup = optax.linear_schedule(0.0, peak, max(t.warmup_steps, 1))
  decay_steps = max(t.num_steps - t.warmup_steps, 1)
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=t.end_lr_fraction)
  elif t.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  else:
    decay = optax.constant_schedule(peak)
  return optax.join_schedules([warmup, decay], [t.warmup_steps])


def leaf_name(path) -> str | None:
  """The parameter name of a tree path: its last dict key (a logical-axis box adds `.value`)."""
  keys = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
  return keys[-1] if keys else None


def decay_mask(params):
  """True for leaves named `kernel` or `embedding`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: leaf_name(path) in ("kernel", "embedding"), params)


def ssm_mask(params):
  """True for the state space parameters (no weight decay: none is named kernel/embedding)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: leaf_name(path) in SSM_PARAMETERS,
                                          params)


def ssm_lr_ratio(model: ModelConfig) -> float:
  """The attention variant's `lr_ratio` option (the SSM mixers'), else 1."""
  return float(registry.resolve_spec("attention", model.spec("attention")).get("lr_ratio", 1.0))


def scale_ssm_updates(inner: optax.GradientTransformation,
                      ratio: float) -> optax.GradientTransformation:
  """`inner` with the SSM parameters' updates times `ratio`; same state as `inner`."""
  if not ratio > 0:
    raise ConfigError(f"model.attention.lr_ratio={ratio!r} must be positive")
  if ratio == 1.0:
    return inner

  def update(updates, state, params=None):
    updates, state = inner.update(updates, state, params)
    return jax.tree.map(lambda u, ssm: u * ratio if ssm else u, updates,
                        ssm_mask(updates)), state

  return optax.GradientTransformation(inner.init, update)


def make_optimizer(t: ml_collections.ConfigDict, ssm_ratio: float = 1.0
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(clip, AdamW) chain and its schedule; `ssm_ratio`: `ssm_lr_ratio(model)`."""
  schedule = learning_rate_schedule(t)
  parts = []
  if t.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(t.grad_clip_norm))
  parts.append(scale_ssm_updates(optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps,
                                             weight_decay=t.weight_decay, mask=decay_mask),
                                 ssm_ratio))
  return optax.chain(*parts), schedule
