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


def _means(sums: Mapping[str, tuple[jax.Array, jax.Array]]) -> dict[str, jax.Array]:
  return {k: s / jnp.maximum(n, 1e-9) for k, (s, n) in sums.items()}


def make_train_step(model: Model, task: Task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, aux_loss_weights: Mapping[str, float],
                    on_nonfinite: str = "stop") -> Callable:
  """train_step(state, batch) -> (state, metrics).

  An update whose loss or gradient norm is not finite is never applied. `on_nonfinite="skip"`
  goes on with the next batch; "stop" freezes the state from then on and records the step in
  `first_nonfinite_step`, so the runner stops with the last good state intact.
  """

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    prepare_rng, dropout_rng = jax.random.split(rng)
    inputs, targets = task.prepare(batch, prepare_rng, train=True)

    def loss_fn(params):
      outputs, aux = model.apply({"params": params}, inputs, deterministic=False,
                                 rngs={"dropout": dropout_rng})
      metrics = _means(task.metrics(outputs, targets))
      total = metrics["loss"] + weighted_aux_loss(aux, aux_loss_weights)
      return total, (metrics, aux)

    (total, (metrics, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    healthy = state.first_nonfinite_step < 0
    apply = finite & healthy if on_nonfinite == "stop" else finite
    keep_new = lambda new, old: jnp.where(apply, new, old)
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
