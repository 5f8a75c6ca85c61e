"""Optimizer: AdamW (Loshchilov & Hutter 2019) with warmup then cosine or linear decay, and
global-norm gradient clipping. Weight decay applies to kernels and embeddings only (not to
biases or norm scales), as in BERT.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from encoders.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to `t.learning_rate` over `t.warmup_steps`, then decay to
  `t.learning_rate * t.end_lr_fraction` at `t.num_steps`."""
  if t.schedule not in SCHEDULES:
    raise ConfigError(f"train.schedule={t.schedule!r}; allowed: {', '.join(SCHEDULES)}")
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


def decay_mask(params):
  """True for leaves named `kernel` or `embedding`."""
  def is_matrix(path, _):
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(t: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                            optax.Schedule]:
  schedule = learning_rate_schedule(t)
  parts = []
  if t.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(t.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay, mask=decay_mask))
  return optax.chain(*parts), schedule
