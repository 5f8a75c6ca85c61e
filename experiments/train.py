"""`train_and_evaluate(config, workdir)`: mesh -> task -> state -> jitted loop -> eval -> save.

Re-running the same command in the same workdir resumes from the latest checkpoint: the state
holds the step, and data order, masks and dropout are pure functions of (seed, step), so the
resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

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
from experiments import distributed, init_from, partitioning
from experiments import workdir as workdir_lib
from experiments.bench.common import compiled_cost
from experiments.checkpoints import Checkpoints, abstract_like
from experiments.data.pipeline import process_slice
from experiments.metrics import MetricsWriter
from experiments.optim import make_optimizer
from experiments.preemption import PreemptionWatch
from experiments.steps import NONFINITE_POLICIES, init_state, make_eval_step, make_train_step
from experiments.tasks import make_task


def validate_early(config: ml_collections.ConfigDict) -> None:
  """Cheap checks that must fail before any data is read or anything compiled."""
  for kind in SPEC_FIELDS:
    if kind in config.model:
      registry.split_spec(kind, config.model[kind].to_dict()
                          if hasattr(config.model[kind], "to_dict") else config.model[kind])
  t = config.train
  if t.num_steps < 0:
    raise ConfigError(f"train.num_steps={t.num_steps} must be >= 0 (0 = evaluate the "
                      "initialisation, e.g. an imported checkpoint zero-shot)")
  for field in ("batch_size", "grad_accum_steps", "log_every", "eval_every", "checkpoint_every"):
    if t[field] <= 0:
      raise ConfigError(f"train.{field}={t[field]} must be positive")
  if t.on_nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"train.on_nonfinite={t.on_nonfinite!r}; "
                      f"allowed: {', '.join(NONFINITE_POLICIES)}")


def check_finite(state, policy: str, last_saved: int | None) -> None:
  """Stops the run (policy "stop") once a step had a non-finite loss or gradient."""
  bad = int(jax.device_get(state.first_nonfinite_step))
  if policy == "stop" and bad >= 0:
    raise FloatingPointError(
        f"non-finite loss or gradients at step {bad}; stopped without applying that update. "
        f"Last good checkpoint: step {last_saved}. Set train.on_nonfinite='skip' to skip "
        "such batches, or lower train.learning_rate")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if possible); returns the final eval metrics.

  Returns {} when the run stopped early (`train.steps_per_run`, or SIGTERM with
  `train.save_on_sigterm`) after saving a checkpoint; re-running continues it.
  """
  validate_early(config)
  workdir_lib.prepare(config, workdir, overwrite)
  distributed.barrier("workdir")  # process 0 may have cleared the old run
  t = config.train

  # --- Mesh, task, model -------------------------------------------------------------------
  mesh = partitioning.make_mesh(config.mesh)
  partitioning.check_batch_divisible(t.batch_size, mesh, "train.batch_size",
                                     t.grad_accum_steps)
  partitioning.check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
  axis_rules = partitioning.rules()
  task = make_task(config)
  model_config = task.model_config(config.model.to_dict())
  model = task.build_model(model_config)
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
      state = init_from.initial_params(config, task, model_config, state, shardings)
      state = state.replace(params=jax.device_put(task.initial_params(state.params),
                                                  shardings.params))
    start_step = int(state.step)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))

    # --- Steps ---------------------------------------------------------------------------
    replicated = partitioning.replicated(mesh)
    batch_sharding = partitioning.batch_sharding(mesh)
    train_step = jax.jit(
        make_train_step(model, task, optimizer, schedule, dict(t.aux_loss_weights),
                        t.on_nonfinite, t.grad_accum_steps),
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
      means = {k: s / max(n, 1e-9) for k, (s, n) in sums.items()}
      return task.summarize({**means, **task.corpus_metrics(model, params)})

    if start_step >= t.num_steps:  # finished run, or num_steps=0: just evaluate
      checkpoints.close()
      eval_metrics = evaluate(state.params)
      if t.num_steps == 0:  # the initialisation's metrics (e.g. a zero-shot checkpoint)
        writer = MetricsWriter(workdir, total_steps=0, start_step=0, progress=False)
        writer.write(0, "info", {"num_params": num_params, "num_devices": jax.device_count(),
                                 **task.data_info()})
        writer.write(0, "eval", eval_metrics)
        writer.close()
      return eval_metrics

    # --- Loop ----------------------------------------------------------------------------
    writer = MetricsWriter(workdir, total_steps=t.num_steps, start_step=start_step,
                           progress=config.progress_bar)
    # Compile explicitly once: exact compile time, XLA's FLOPs and memory figures.
    compile_start = time.perf_counter()
    first_batch = device_batch(task.train_batch(start_step))
    compiled_step = train_step.lower(state, first_batch).compile()
    compile_seconds = time.perf_counter() - compile_start
    if start_step == 0:
      writer.write(0, "info", {"num_params": num_params, "num_devices": jax.device_count(),
                               "compile_seconds": compile_seconds,
                               **compiled_cost(compiled_step), **task.data_info()})
    tokens_per_step = t.batch_size * length
    last_saved = checkpoints.all_steps()[-1] if checkpoints.all_steps() else None
    eval_metrics: dict[str, float] = {}
    timer, timed_steps = time.perf_counter(), -1
    stop_step = min(t.num_steps, start_step + t.steps_per_run) if t.steps_per_run else t.num_steps
    try:
      with PreemptionWatch(t.save_on_sigterm) as preemption:
        for step in range(start_step, stop_step):
          batch = first_batch if step == start_step else device_batch(task.train_batch(step))
          state, metrics = compiled_step(state, batch)
          done = step + 1
          if timed_steps < 0:  # the first step's time (warm-up) is not counted
            jax.block_until_ready(metrics)
            timer = time.perf_counter()
          timed_steps += 1
          writer.advance(1)
          preempted = preemption.requested(done)
          must_save = done % t.checkpoint_every == 0 or done == stop_step or preempted
          if done % t.log_every == 0 or must_save:
            check_finite(state, t.on_nonfinite, last_saved)
          if done % t.log_every == 0 or done == t.num_steps:
            metrics = jax.device_get(metrics)
            rate = timed_steps / (time.perf_counter() - timer) if timed_steps > 0 else float("nan")
            writer.write(done, "train", {**metrics, "steps_per_sec": rate,
                                         "tokens_per_sec": rate * tokens_per_step,
                                         "compile_seconds": compile_seconds})
            timer, timed_steps = time.perf_counter(), 0
          if done % t.eval_every == 0 or done == t.num_steps:
            eval_metrics = evaluate(state.params)
            writer.write(done, "eval", eval_metrics)
            timer, timed_steps = time.perf_counter(), 0
          if checkpoints.save(done, state, force=done == stop_step or preempted):
            last_saved = done
          if preempted:
            print(f"SIGTERM: saved a checkpoint at step {done}; stopping", flush=True)
            break
    finally:
      checkpoints.close()
      writer.close()
  return eval_metrics if int(state.step) >= t.num_steps else {}
