"""`train_and_evaluate(config, workdir)`: mesh -> task -> state -> jitted loop -> eval -> save.

Re-running the same command in the same workdir resumes from the latest checkpoint: the state
holds the step, and data order, masks and dropout are pure functions of (seed, step), so the
resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from encoders import registry
from encoders.config import SPEC_FIELDS
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import partitioning
from experiments.checkpoints import Checkpoints, abstract_like
from experiments.data.pipeline import process_slice
from experiments.metrics import MetricsWriter
from experiments.optim import make_optimizer
from experiments.steps import init_state, make_eval_step, make_train_step
from experiments.tasks import make_task


def validate_early(config: ml_collections.ConfigDict) -> None:
  """Cheap checks that must fail before any data is read or anything compiled."""
  for kind in SPEC_FIELDS:
    if kind in config.model:
      registry.split_spec(kind, config.model[kind].to_dict()
                          if hasattr(config.model[kind], "to_dict") else config.model[kind])
  t = config.train
  for field in ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
    if t[field] <= 0:
      raise ConfigError(f"train.{field}={t[field]} must be positive")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json; refuses a workdir made with a different model."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    old_model, new_model = old.get("model", {}), new["model"]
    changed = [f"model.{k}: {old_model.get(k)!r} -> {new_model.get(k)!r}"
               for k in sorted(set(old_model) | set(new_model))
               if old_model.get(k) != new_model.get(k)]
    if changed:
      raise ConfigError(f"{path}: this workdir holds a run of a different model "
                        f"({'; '.join(changed[:4])}); use a new workdir")
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if possible); returns the final eval metrics."""
  validate_early(config)
  os.makedirs(workdir, exist_ok=True)
  write_config(config, workdir)
  t = config.train

  # --- Mesh, task, model -------------------------------------------------------------------
  mesh = partitioning.make_mesh(config.mesh)
  partitioning.check_batch_divisible(t.batch_size, mesh, "train.batch_size")
  partitioning.check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
  axis_rules = partitioning.rules()
  task = make_task(config)
  model_config = task.model_config(config.model.to_dict())
  model = Model(model_config)
  optimizer, schedule = make_optimizer(t)
  pid, nproc = jax.process_index(), jax.process_count()

  def device_batch(batch):
    return partitioning.global_batch(process_slice(batch, pid, nproc), mesh)

  with jax.set_mesh(mesh), nn.logical_axis_rules(axis_rules):
    # --- State: abstract shapes -> shardings -> restore or jitted init -------------------
    length = task.train_batch(0)["inputs"].shape[1]
    example = {"tokens": jnp.zeros((1, length), jnp.int32),
               "mask": jnp.ones((1, length), jnp.bool_)}

    def make_state():
      return init_state(model, optimizer, example, config.seed)

    abstract_boxed = jax.eval_shape(make_state)
    shardings = partitioning.logical_shardings(abstract_boxed, mesh, axis_rules)
    abstract = partitioning.strip_boxes(abstract_boxed)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"),
                              save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                              keep_period=t.keep_period, async_save=t.async_checkpoints)
    state = checkpoints.restore_latest(abstract_like(abstract, shardings))
    if state is None:
      state = jax.jit(lambda: nn.unbox(make_state()), out_shardings=shardings)()
    start_step = int(state.step)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))

    # --- Steps ---------------------------------------------------------------------------
    replicated = partitioning.replicated(mesh)
    batch_sharding = partitioning.batch_sharding(mesh)
    train_step = jax.jit(
        make_train_step(model, task, optimizer, schedule, dict(t.aux_loss_weights)),
        in_shardings=(shardings, batch_sharding), out_shardings=(shardings, replicated),
        donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, task),
                        in_shardings=(shardings.params, batch_sharding, replicated),
                        out_shardings=replicated)

    def evaluate(params) -> dict[str, float]:
      sums: dict[str, list[float]] = {}
      eval_rng = jax.random.PRNGKey(config.eval.seed)
      for i, batch in enumerate(task.eval_batches()):
        if config.eval.max_batches and i >= config.eval.max_batches:
          break
        out = jax.device_get(eval_step(params, device_batch(batch),
                                       jax.random.fold_in(eval_rng, i)))
        for name, (s, n) in out.items():
          acc = sums.setdefault(name, [0.0, 0.0])
          acc[0] += float(s)
          acc[1] += float(n)
      return task.summarize({k: s / max(n, 1e-9) for k, (s, n) in sums.items()})

    if start_step >= t.num_steps:
      checkpoints.close()
      return evaluate(state.params)

    # --- Loop ----------------------------------------------------------------------------
    writer = MetricsWriter(workdir, total_steps=t.num_steps, start_step=start_step,
                           progress=config.progress_bar)
    if start_step == 0:
      writer.write(0, "info", {"num_params": num_params, "num_devices": jax.device_count()})
    tokens_per_step = t.batch_size * length
    eval_metrics: dict[str, float] = {}
    timer, timed_steps, compile_seconds = time.perf_counter(), 0, None
    stop_step = min(t.num_steps, start_step + t.steps_per_run) if t.steps_per_run else t.num_steps
    for step in range(start_step, stop_step):
      state, metrics = train_step(state, device_batch(task.train_batch(step)))
      done = step + 1
      if compile_seconds is None:  # first call: trace + compile + one step
        jax.block_until_ready(metrics)
        compile_seconds = time.perf_counter() - timer
        timer, timed_steps = time.perf_counter(), 0
      else:
        timed_steps += 1
      writer.advance(1)
      if done % t.log_every == 0 or done == t.num_steps:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - timer
        if not np.isfinite(metrics["total_loss"]):
          raise FloatingPointError(f"training loss is {metrics['total_loss']} at step {done}; "
                                   "lower train.learning_rate or check the data")
        rate = timed_steps / elapsed if timed_steps else float("nan")
        writer.write(done, "train", {**metrics, "steps_per_sec": rate,
                                     "tokens_per_sec": rate * tokens_per_step,
                                     "compile_seconds": compile_seconds})
        timer, timed_steps = time.perf_counter(), 0
      if done % t.eval_every == 0 or done == t.num_steps:
        eval_metrics = evaluate(state.params)
        writer.write(done, "eval", eval_metrics)
        timer, timed_steps = time.perf_counter(), 0
      checkpoints.save(done, state, force=done == stop_step)
    checkpoints.close()
    writer.close()
  return eval_metrics
