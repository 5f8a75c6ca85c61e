"""Optimizer: AdamW (Loshchilov & Hutter 2019) with warmup then cosine, linear,
warmup-stable-decay or (LRA's) rsqrt schedules, and global-norm gradient clipping; or StableAdamW
(AdamW with per-tensor update clipping, `train.optimizer = "stable_adamw"`). Weight decay
applies to kernels and embeddings only (not to biases or norm scales), as in BERT, unless a
variant decides otherwise, and a variant may give its parameters their own learning rate (the
SSM mixers' step sizes and A, as the S4 and S5 references do): both come from the model's
variants (`encoders.needs.model_needs`, over every layer of the pattern), not from parameter
names here. The per-parameter rates scale the updates and add no optimizer state, so
checkpoints keep their layout.

Decoupled weight decay comes in two scales (`train.weight_decay_scale`). `lr`: each step
multiplies a weight by 1 - lr_t * wd, as PyTorch's and optax's AdamW do (and BERT's
AdamWeightDecay, Devlin et al. 2019; so the decay shrinks with the schedule and wd is ~1e-2).
`schedule`: by 1 - (lr_t / peak lr) * wd, the form of Loshchilov & Hutter's paper ("Decoupled
Weight Decay Regularization", 2019: w <- w - eta_t * wd * w with eta_t the schedule multiplier,
not the learning rate), which MosaicML's DecoupledAdamW and optimi's `decouple_lr` implement and
ModernBERT (Warner et al. 2024) trains with (wd 1e-5 there is 1 / peak lr = 1,250x stronger at
lr 8e-4 than the `lr` scale). Both are the decay of `add_decayed_weights` with wd or wd / peak
inside the learning-rate scaling, so the optimizer state is the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from encoders.errors import ConfigError
from encoders.needs import ModelNeeds, default_decays

SCHEDULES = ("cosine", "linear", "constant", "wsd", "rsqrt")
OPTIMIZERS = ("adamw", "stable_adamw")
DECAY_SCALES = ("lr", "schedule")


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
  if t.schedule == "wsd":
    return warmup_stable_decay(t, warmup)
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=t.end_lr_fraction)
  elif t.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  else:
    decay = optax.constant_schedule(peak)
  return optax.join_schedules([warmup, decay], [t.warmup_steps])


def warmup_stable_decay(t: ml_collections.ConfigDict, warmup: optax.Schedule) -> optax.Schedule:
  """Warmup, a constant peak, then over the last `train.decay_fraction` of the steps the
  1 - sqrt decay to `learning_rate * end_lr_fraction` (Hu et al. 2024, "MiniCPM"; the 1 - sqrt
  shape from Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
  Training Durations"; ModernBERT's schedule, Warner et al. 2024)."""
  fraction = t.get("decay_fraction", 0.1)
  if not 0.0 < fraction <= 1.0:
    raise ConfigError(f"train.decay_fraction={fraction!r} must be in (0, 1]")
  decay_steps = max(int(round(fraction * t.num_steps)), 1)
  start = max(t.num_steps - decay_steps, t.warmup_steps)
  peak, end = t.learning_rate, t.learning_rate * t.end_lr_fraction

  def decay(step):
    progress = jnp.clip(step / max(t.num_steps - start, 1), 0.0, 1.0)
    return end + (peak - end) * (1.0 - jnp.sqrt(progress))

  return optax.join_schedules([warmup, optax.constant_schedule(peak), decay],
                              [t.warmup_steps, start])


def stable_adamw(learning_rate: optax.Schedule, b1: float, b2: float, eps: float,
                 weight_decay: float, mask) -> optax.GradientTransformation:
  """StableAdamW (Wortsman et al. 2023, "Stable and low-precision training for large-scale
  vision-language models"): AdamW whose step on each tensor is divided by max(1, RMS(g^2 /
  v_hat)), AdaFactor's update clipping (Shazeer & Stern 2018), which damps the steps of tensors
  whose second-moment estimate lags a gradient spike. Composed of optax's scale_by_adam,
  add_decayed_weights (decay clipped alike, as in optimi's StableAdamW, which ModernBERT
  trains with) and scale_by_learning_rate; the same state as optax.adamw. optimi's decay with
  `decouple_lr` is this one with `weight_decay` / peak lr (`decay_coefficient`)."""
  inner = optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                      optax.add_decayed_weights(weight_decay, mask))

  def update(grads, state, params=None):
    updates, state = inner.update(grads, state, params)
    adam = state[0]
    correction = 1.0 - b2 ** adam.count.astype(jnp.float32)

    def clip(u, g, nu):
      ratio = jnp.square(g.astype(jnp.float32)) / jnp.maximum(nu / correction, eps * eps)
      return u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(ratio))).astype(u.dtype)

    return jax.tree.map(clip, updates, grads, adam.nu), state

  return optax.chain(optax.GradientTransformation(inner.init, update),
                     optax.scale_by_learning_rate(learning_rate))


def decay_coefficient(t: ml_collections.ConfigDict) -> float:
  """The coefficient of `add_decayed_weights` (inside the lr scaling) for
  `train.weight_decay_scale` (module docstring): wd, or wd / peak lr."""
  scale = t.get("weight_decay_scale", "lr")
  if scale not in DECAY_SCALES:
    raise ConfigError(f"train.weight_decay_scale={scale!r}; allowed: {', '.join(DECAY_SCALES)}")
  if scale == "lr" or not t.weight_decay:
    return t.weight_decay
  if t.schedule == "rsqrt":
    raise ConfigError("train.weight_decay_scale='schedule' needs a schedule that peaks at "
                      "train.learning_rate (not rsqrt)")
  if not t.learning_rate > 0:
    raise ConfigError(f"train.learning_rate={t.learning_rate!r} must be positive with "
                      "train.weight_decay_scale='schedule'")
  return t.weight_decay / t.learning_rate


def dict_keys(path) -> tuple[str, ...]:
  """The dict keys of a tree path (a parameter's module path and name)."""
  return tuple(entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey))


def decay_mask(needs: ModelNeeds | None):
  """The `mask` of `add_decayed_weights`: the variants' choices (encoders/needs.py), else
  kernels and embeddings (BERT's rule)."""
  decays = needs.decays if needs is not None else default_decays

  def mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: decays(dict_keys(path)), params)

  return mask


def learning_rate_multipliers(params, needs: ModelNeeds | None, peak: float):
  """Per parameter, the factor on the run's updates that its variant's learning-rate rule
  asks for (1.0 where none)."""
  def multiplier(path, _):
    rate = None if needs is None else needs.learning_rate(dict_keys(path))
    return 1.0 if rate is None else rate.multiplier(peak)

  return jax.tree_util.tree_map_with_path(multiplier, params)


def scale_by_parameter_rates(inner: optax.GradientTransformation, needs: ModelNeeds | None,
                             peak: float) -> optax.GradientTransformation:
  """`inner` with each update times its parameter's learning-rate multiplier; same state as
  `inner` (so checkpoints keep their layout)."""
  rules = [] if needs is None else [group.learning_rate for layer in needs.layer_groups
                                    for groups in layer.values() for group in groups
                                    if group.learning_rate]
  if not rules:
    return inner
  for rule in rules:  # a bad rule fails here, before any compile
    rule.multiplier(peak)

  def update(updates, state, params=None):
    updates, state = inner.update(updates, state, params)
    factors = learning_rate_multipliers(updates, needs, peak)
    return jax.tree.map(lambda u, f: u if f == 1.0 else u * f, updates, factors), state

  return optax.GradientTransformation(inner.init, update)


def make_optimizer(t: ml_collections.ConfigDict, needs: ModelNeeds | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(clip, AdamW or StableAdamW) chain and its schedule; `needs` (`model_needs(model)`) sets
  the per-parameter learning rates and decay (default: one rate, decay on kernels and
  embeddings)."""
  schedule = learning_rate_schedule(t)
  parts = []
  if t.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(t.grad_clip_norm))
  name = t.get("optimizer", "adamw")
  if name not in OPTIMIZERS:
    raise ConfigError(f"train.optimizer={name!r}; allowed: {', '.join(OPTIMIZERS)}")
  adam = optax.adamw if name == "adamw" else stable_adamw
  parts.append(scale_by_parameter_rates(
      adam(schedule, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=decay_coefficient(t),
           mask=decay_mask(needs)), needs, t.learning_rate))
  return optax.chain(*parts), schedule
