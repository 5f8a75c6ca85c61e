"""Pure train and eval steps. The runner jits them once with explicit shardings.

The train state is a plain pytree: step, params, optimizer state and a base RNG key. All
randomness of step s (dropout, MLM masks) comes from `fold_in(rng, s)`, so a run resumed
from a checkpoint at step s continues bit-for-bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from encoders import sharding
from encoders.model import Model
from experiments.tasks.base import Task

NONFINITE_POLICIES = ("stop", "skip")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: flax.core.FrozenDict | dict
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key data (checkpoint-friendly)
  first_nonfinite_step: jax.Array  # first step whose loss or gradients were not finite; -1
  skipped_steps: jax.Array  # steps whose update was not applied (non-finite)


def init_state(model: Model, optimizer: optax.GradientTransformation, example_inputs,
               seed: int) -> TrainState:
  """Builds the state; params keep their logical-axis boxes (the runner unboxes)."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init({"params": init_rng}, example_inputs)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=train_rng,
                    first_nonfinite_step=jnp.full((), -1, jnp.int32),
                    skipped_steps=jnp.zeros((), jnp.int32))


def weighted_aux_loss(aux: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
  """Sum of aux entries named `*_loss`, each times its weight (default 1.0)."""
  total = jnp.zeros((), jnp.float32)
  for name, value in aux.items():
    if name.endswith("_loss"):
      total = total + weights.get(name, 1.0) * value.astype(jnp.float32)
  return total


def means(sums: Mapping[str, tuple[jax.Array, jax.Array]], xp=jnp) -> dict[str, jax.Array]:
  """name -> (sum, count) pairs -> name -> sum / count (0 where the count is 0). `xp` is the
  array module: jnp inside the jitted step, numpy for the runner's host-side eval totals."""
  return {k: s / xp.maximum(n, 1e-9) for k, (s, n) in sums.items()}


def split_micro_batches(x: jax.Array, num: int) -> jax.Array:
  """[batch, ...] -> [num, batch / num, ...], micro-batch j holding rows j, j + num, ...

  Strided, so that every device's contiguous shard of the batch contributes equally to every
  micro-batch: no data moves between devices.
  """
  x = x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
  return sharding.constrain(x, (None, "act_batch") + (None,) * (x.ndim - 2))


def make_train_step(model: Model, task: Task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, aux_loss_weights: Mapping[str, float],
                    on_nonfinite: str = "stop", grad_accum_steps: int = 1) -> Callable:
  """train_step(state, batch) -> (state, metrics).

  An update whose loss or gradient norm is not finite is never applied. `on_nonfinite="skip"`
  goes on with the next batch; "stop" freezes the state from then on and records the step in
  `first_nonfinite_step`, so the runner stops with the last good state intact.

  `grad_accum_steps = k > 1`: the whole batch is prepared first (same masks as one big step),
  then split into k micro-batches run one after another in a `lax.scan`. Each micro-batch's
  gradient of its mean loss is weighted by its loss count n_j and the sum divided by the total
  count, and the metrics' (sum, count) pairs are added, so the update and the metrics equal
  those of the whole batch (up to float rounding). Aux losses (MoE balance, z-loss) are
  computed per micro-batch; their gradients are weighted by n_j / n and their logged values
  averaged. Dropout draws independent masks per micro-batch.
  """

  def objective(params, inputs, targets, dropout_rng):
    outputs, aux = model.apply({"params": params}, inputs, deterministic=False,
                               rngs={"dropout": dropout_rng})
    sums = task.metrics(outputs, targets)
    loss = sums["loss"][0] / jnp.maximum(sums["loss"][1], 1e-9)
    return loss + weighted_aux_loss(aux, aux_loss_weights), (sums, aux)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def accumulated(params, inputs, targets, dropout_rng):
    """(grads, metric sums, aux) over grad_accum_steps micro-batches."""
    micro = jax.tree.map(lambda x: split_micro_batches(x, grad_accum_steps), (inputs, targets))

    def one(index, micro_inputs, micro_targets):
      (_, (sums, aux)), grads = grad_fn(params, micro_inputs, micro_targets,
                                        jax.random.fold_in(dropout_rng, index))
      weight = sums["loss"][1].astype(jnp.float32)
      return jax.tree.map(lambda g: g.astype(jnp.float32) * weight, grads), sums, aux

    def body(total, xs):
      return jax.tree.map(jnp.add, total, one(*xs)), None

    indices = jnp.arange(grad_accum_steps)
    shapes = jax.eval_shape(one, 0, *jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, sums, aux), _ = jax.lax.scan(body, zeros, (indices, *micro))
    count = jnp.maximum(sums["loss"][1], 1e-9)
    grads = jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, params)
    return grads, sums, jax.tree.map(lambda a: a / grad_accum_steps, aux)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    prepare_rng, dropout_rng = jax.random.split(rng)
    inputs, targets = task.prepare(batch, prepare_rng, train=True)
    if grad_accum_steps == 1:
      (_, (sums, aux)), grads = grad_fn(state.params, inputs, targets, dropout_rng)
    else:
      grads, sums, aux = accumulated(state.params, inputs, targets, dropout_rng)
    metrics = means(sums)
    total = metrics["loss"] + weighted_aux_loss(aux, aux_loss_weights)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    healthy = state.first_nonfinite_step < 0
    apply = finite & healthy if on_nonfinite == "stop" else finite

    def keep_new(new, old):
      return jnp.where(apply, new, old)

    done = state.step + 1
    new_state = state.replace(
        step=done, params=jax.tree.map(keep_new, params, state.params),
        opt_state=jax.tree.map(keep_new, opt_state, state.opt_state),
        first_nonfinite_step=jnp.where(~finite & healthy, done, state.first_nonfinite_step),
        skipped_steps=state.skipped_steps + (~apply).astype(jnp.int32))
    metrics = {**metrics, **{f"aux/{k}": v for k, v in aux.items()},
               "total_loss": total, "grad_norm": grad_norm,
               "learning_rate": schedule(state.step),
               "skipped_steps": new_state.skipped_steps}
    return new_state, metrics

  return train_step


def make_eval_step(model: Model, task: Task) -> Callable:
  """eval_step(params, batch, rng) -> name -> (sum, count) for exact aggregation."""

  def eval_step(params, batch, rng):
    inputs, targets = task.prepare(batch, rng, train=False)
    outputs, _ = model.apply({"params": params}, inputs, deterministic=True)
    return task.metrics(outputs, targets)

  return eval_step
