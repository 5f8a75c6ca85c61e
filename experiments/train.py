"""`train_and_evaluate(config, workdir)`: setup -> train loop -> evaluate; returns how it ended.

Three parts, as in MaxText: `setup` builds the mesh, task, state (restored or initialised),
checkpoints and compiled steps; `evaluate` runs the eval set through the jitted eval step and
reduces its (sum, count) pairs; `train_loop` runs the steps with logging, evaluation,
checkpoints, non-finite checks and preemption.

Re-running the same command in the same workdir resumes from the latest checkpoint: the state
holds the step, and data order, masks and dropout are pure functions of (seed, step), so the
resumed run is identical to an uninterrupted one. The returned `RunResult` (also written as
the last `info` record of metrics.jsonl) says whether the run finished all its steps or
stopped early: preempted (SIGTERM), `train.steps_per_run`, or a non-finite step.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from encoders.config import resolve_model
from encoders.errors import ConfigError
from encoders.needs import declared_aux_losses, model_needs
from experiments import costs, distributed, init_from, partitioning
from experiments import workdir as workdir_lib
from experiments.checkpoints import BestCheckpoint, Checkpoints, abstract_like
from experiments.data.pipeline import process_slice
from experiments.metrics import MetricsWriter, read_jsonl
from experiments.optim import make_optimizer
from experiments.preemption import PreemptionWatch
from experiments.steps import (
    NONFINITE_POLICIES,
    init_state,
    make_eval_step,
    make_train_step,
    means,
)
from experiments.tasks import make_task
from experiments.tasks.base import Task

# How a call of `train_and_evaluate` ended.
FINISHED = "finished"  # every one of train.num_steps steps ran (or there was nothing to run)
PREEMPTED = "preempted"  # SIGTERM: saved a checkpoint and stopped
STEPS_PER_RUN = "steps_per_run"  # train.steps_per_run steps ran: saved and stopped
NONFINITE = "nonfinite"  # a non-finite loss or gradient with on_nonfinite="stop"
STATUSES = (FINISHED, PREEMPTED, STEPS_PER_RUN, NONFINITE)


@dataclasses.dataclass(frozen=True)
class RunResult:
  """How a run ended: `status` (one of STATUSES), the state's `step`, the final eval
  `metrics` (empty unless finished) and, for a non-finite stop, the `message`."""
  status: str
  step: int
  metrics: dict[str, float]
  message: str = ""

  @property
  def finished(self) -> bool:
    return self.status == FINISHED


def validate_early(config: ml_collections.ConfigDict) -> None:
  """Cheap checks that must fail before any data is read, anything compiled or the workdir
  written: every variant spec and layer pattern entry resolves (names, options)."""
  resolve_model(config.model.to_dict())
  t = config.train
  aux_losses = declared_aux_losses()
  for name in t.aux_loss_weights:
    if name not in aux_losses:
      raise ConfigError(f"train.aux_loss_weights.{name} is not an aux loss; allowed: "
                        f"{', '.join(aux_losses)}")
  if t.num_steps < 0:
    raise ConfigError(f"train.num_steps={t.num_steps} must be >= 0 (0 = evaluate the "
                      "initialisation, e.g. an imported checkpoint zero-shot)")
  for field in ("batch_size", "grad_accum_steps", "log_every", "eval_every", "checkpoint_every"):
    if t[field] <= 0:
      raise ConfigError(f"train.{field}={t[field]} must be positive")
  if config.eval.get("select_mode", "max") not in ("max", "min"):
    raise ConfigError(f"eval.select_mode={config.eval.select_mode!r}; allowed: max, min")
  if t.on_nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"train.on_nonfinite={t.on_nonfinite!r}; "
                      f"allowed: {', '.join(NONFINITE_POLICIES)}")


@dataclasses.dataclass
class Run:
  """Everything `setup` builds for one run; `state` is replaced as training goes on."""
  config: ml_collections.ConfigDict
  workdir: str
  task: Task
  model: nn.Module
  state: Any
  start_step: int
  num_params: int
  length: int  # sequence length of the train batches
  checkpoints: Checkpoints
  train_step: Callable  # jitted (state, batch) -> (state, metrics), state donated
  eval_step: Callable  # jitted (params, batch, rng) -> name -> (sum, count)
  device_batch: Callable  # host batch -> this process's slice as a global device array
  abstract_params: Any = None  # ShapeDtypeStructs with shardings (restoring the best params)
  best: BestCheckpoint | None = None  # eval.select_best: the best parameters so far


@dataclasses.dataclass
class Program:
  """What a config compiles to over a mesh, from abstract shapes (no parameter materialised):
  the runner's `setup` and the compile-only report (experiments/aot) both start here."""
  task: Task
  model: nn.Module
  model_config: Any
  make_state: Callable  # () -> the initial state, parameters boxed with their logical axes
  abstract: Any  # the state's ShapeDtypeStructs (unboxed)
  shardings: Any  # the state's NamedShardings
  train_step: Callable  # jitted (state, batch) -> (state, metrics), state donated
  eval_step: Callable  # jitted (params, batch, rng) -> name -> (sum, count)
  schedule: Callable  # step -> learning rate
  length: int  # sequence length of the train batches

  def abstract_state(self):
    """The state as ShapeDtypeStructs carrying their shardings (for `.trace`/restoring)."""
    return abstract_like(self.abstract, self.shardings)


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Program:
  """Task, model, optimizer, state shapes and shardings, and the jitted steps of `config`.

  Runs under the mesh and the logical axis rules (see `train_and_evaluate`).
  """
  t = config.train
  partitioning.check_batch_divisible(t.batch_size, mesh, "train.batch_size",
                                     t.grad_accum_steps)
  partitioning.check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
  task = make_task(config)
  model_config = task.model_config(config.model.to_dict())
  model = task.build_model(model_config)
  optimizer, schedule = make_optimizer(t, model_needs(model_config))
  length = task.train_batch(0)["inputs"].shape[1]

  def make_state():  # traced only (eval_shape, jit): no array lands on the mesh's devices here
    return init_state(model, optimizer, task.example_inputs(length), config.seed)

  abstract_boxed = jax.eval_shape(make_state)
  shardings = partitioning.logical_shardings(abstract_boxed, mesh, partitioning.rules())
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
  return Program(task=task, model=model, model_config=model_config, make_state=make_state,
                 abstract=partitioning.strip_boxes(abstract_boxed), shardings=shardings,
                 train_step=train_step, eval_step=eval_step, schedule=schedule,
                 length=length)


def setup(config: ml_collections.ConfigDict, workdir: str,
          mesh: jax.sharding.Mesh) -> Run:
  """`build_program`, then the state (restored from the latest checkpoint, or initialised).

  Runs under the mesh and the logical axis rules (see `train_and_evaluate`).
  """
  t = config.train
  program = build_program(config, mesh)
  task, shardings, abstract = program.task, program.shardings, program.abstract
  pid, nproc = jax.process_index(), jax.process_count()

  def device_batch(batch):
    return partitioning.global_batch(process_slice(batch, pid, nproc), mesh)

  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"),
                            save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                            keep_period=t.keep_period, async_save=t.async_checkpoints)
  state = checkpoints.restore_latest(program.abstract_state())
  if state is None:
    state = jax.jit(lambda: nn.unbox(program.make_state()), out_shardings=shardings)()
    state = init_from.initial_params(config, task, program.model_config, state, shardings)
    state = state.replace(params=jax.device_put(task.initial_params(state.params),
                                                shardings.params))

  best = None
  if config.eval.select_best:
    best = BestCheckpoint(os.path.join(workdir, "checkpoints_best"), config.eval.select_best,
                          config.eval.select_mode)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    best.resume(int(state.step), [r for r in records if r["split"] == "eval"])
  return Run(config=config, workdir=workdir, task=task, model=program.model, state=state,
             start_step=int(state.step),
             num_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)),
             length=program.length, checkpoints=checkpoints, train_step=program.train_step,
             eval_step=program.eval_step, device_batch=device_batch,
             abstract_params=abstract_like(abstract.params, shardings.params), best=best)


def evaluate(run: Run, params, batches=None) -> dict[str, float]:
  """The eval set's metrics (or those of `batches`, e.g. the test split): (sum, count) pairs
  added over batches (a sum may be an array, e.g. a histogram), then the step module's
  reduction (`steps.means`), then the task's summary (which turns such arrays into metrics)
  and corpus-level metrics."""
  config = run.config
  sums: dict[str, tuple[np.ndarray, float]] = {}
  eval_rng = jax.random.PRNGKey(config.eval.seed)
  for i, batch in enumerate(run.task.eval_batches() if batches is None else batches):
    if config.eval.max_batches and i >= config.eval.max_batches:
      break
    out = jax.device_get(run.eval_step(params, run.device_batch(batch),
                                       jax.random.fold_in(eval_rng, i)))
    for name, (total, count) in out.items():  # float64 on the host; a total may be an array
      total, count = np.asarray(total, np.float64), float(count)
      if name in sums:
        total, count = sums[name][0] + total, sums[name][1] + count
      sums[name] = (total, count)
  return run.task.summarize({**means(sums, xp=np),
                             **run.task.corpus_metrics(run.model, params)})


def first_nonfinite_step(state) -> int:
  """The first step whose loss or gradients were not finite, or -1."""
  return int(jax.device_get(state.first_nonfinite_step))


def train_loop(run: Run, writer: MetricsWriter) -> RunResult:
  """Steps from `run.start_step` to the end (or `train.steps_per_run` of them), with logging,
  evaluation, checkpoints, the non-finite check and preemption; returns how it ended."""
  t = run.config.train
  # Trace and compile explicitly once: exact compile time, our FLOP count of the traced step
  # (every layer and kernel, experiments/costs.py) beside XLA's, and XLA's memory figures.
  compile_start = time.perf_counter()
  first_batch = run.device_batch(run.task.train_batch(run.start_step))
  traced_step = run.train_step.trace(run.state, first_batch)
  compiled_step = traced_step.lower().compile()
  compile_seconds = time.perf_counter() - compile_start
  if run.start_step == 0:
    writer.write(0, "info", {"num_params": run.num_params, "num_devices": jax.device_count(),
                             "compile_seconds": compile_seconds,
                             "flops_per_step": costs.program_cost(traced_step.jaxpr).flops,
                             **costs.compiled_cost(compiled_step), **run.task.data_info()})
  tokens_per_step = t.batch_size * run.length
  saved = run.checkpoints.all_steps()
  last_saved = saved[-1] if saved else None
  eval_metrics: dict[str, float] = {}
  timer, timed_steps = time.perf_counter(), -1
  stop_step = min(t.num_steps, run.start_step + t.steps_per_run) if t.steps_per_run else (
      t.num_steps)
  state, in_flight = run.state, None
  with PreemptionWatch(t.save_on_sigterm) as preemption:
    for step in range(run.start_step, stop_step):
      batch = first_batch if step == run.start_step else run.device_batch(
          run.task.train_batch(step))
      state, metrics = compiled_step(state, batch)
      run.state = state
      if in_flight is not None:  # at most two steps queued: a SIGTERM is served within about
        jax.block_until_ready(in_flight)  # two step times (dispatch would otherwise run ahead)
      in_flight = metrics
      done = step + 1
      if timed_steps < 0:  # the first step's time (warm-up) is not counted
        jax.block_until_ready(metrics)
        timer = time.perf_counter()
      timed_steps += 1
      writer.advance(1)
      preempted = preemption.requested(done)
      must_save = done % t.checkpoint_every == 0 or done == stop_step or preempted
      if (done % t.log_every == 0 or must_save) and t.on_nonfinite == "stop":
        bad = first_nonfinite_step(state)
        if bad >= 0:  # the state is frozen at the last good update: nothing more to save
          return RunResult(NONFINITE, done, {}, (
              f"non-finite loss or gradients at step {bad}; stopped without applying that "
              f"update. Last good checkpoint: step {last_saved}. Set "
              "train.on_nonfinite='skip' to skip such batches, or lower train.learning_rate"))
      if done % t.log_every == 0 or done == t.num_steps:
        metrics = jax.device_get(metrics)
        rate = timed_steps / (time.perf_counter() - timer) if timed_steps > 0 else float("nan")
        writer.write(done, "train", {**run.task.summarize(metrics), "steps_per_sec": rate,
                                     "tokens_per_sec": rate * tokens_per_step,
                                     "compile_seconds": compile_seconds})
        timer, timed_steps = time.perf_counter(), 0
      if done % t.eval_every == 0 or done == t.num_steps:
        eval_metrics = evaluate(run, state.params)
        writer.write(done, "eval", eval_metrics)
        if run.best is not None:
          run.best.offer(done, eval_metrics, state.params)
        timer, timed_steps = time.perf_counter(), 0
      if run.checkpoints.save(done, state, force=done == stop_step or preempted):
        last_saved = done
      if preempted:
        print(f"SIGTERM: saved a checkpoint at step {done}; stopping", flush=True)
        return RunResult(PREEMPTED, done, {})
  if stop_step < t.num_steps:
    return RunResult(STEPS_PER_RUN, stop_step, {})
  return RunResult(FINISHED, stop_step, eval_metrics)


def test_best(run: Run, writer: MetricsWriter) -> None:
  """`eval.select_best`: the test split's metrics on the best parameters, as a `test` record
  at the last step (with `best_step` and the best eval value)."""
  batches = run.task.test_batches()
  if batches is None:
    raise ConfigError(f"eval.select_best={run.config.eval.select_best!r}: task "
                      f"{run.config.task!r} with data.source={run.config.data.source!r} has "
                      "no test split")
  if run.best.step is None:
    return
  metrics = evaluate(run, run.best.restore(run.abstract_params), batches)
  writer.write(run.config.train.num_steps, "test",
               {**metrics, "best_step": run.best.step,
                f"best_eval_{run.best.metric}": run.best.value})


def has_test_record(workdir: str) -> bool:
  return any(r["split"] == "test" for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> RunResult:
  """Trains `config` in `workdir` (resuming if possible); returns how the run ended.

  A finished run's `RunResult.metrics` are the final eval metrics; a run that stopped early
  (`train.steps_per_run`, SIGTERM with `train.save_on_sigterm`) saved a checkpoint and
  re-running continues it; a non-finite stop (`train.on_nonfinite="stop"`) keeps the last
  good checkpoint and says why in `RunResult.message`. The status is also the last `info`
  record of metrics.jsonl. The workdir is locked for the call (`workdir.exclusive`).
  """
  validate_early(config)
  with workdir_lib.exclusive(workdir):
    workdir_lib.prepare(config, workdir, overwrite)
    distributed.barrier("workdir")  # process 0 may have cleared the old run
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> RunResult:
  mesh = partitioning.make_mesh(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules()):
    run = setup(config, workdir, mesh)
    num_steps = config.train.num_steps
    try:
      if run.start_step >= num_steps:  # finished run, or num_steps=0: just evaluate
        eval_metrics = evaluate(run, run.state.params)
        if num_steps == 0:  # the initialisation's metrics (e.g. a zero-shot checkpoint)
          writer = MetricsWriter(workdir, total_steps=0, start_step=0, progress=False)
          writer.write(0, "info", {"num_params": run.num_params,
                                   "num_devices": jax.device_count(), **run.task.data_info()})
          writer.write(0, "eval", eval_metrics)
          writer.write(0, "info", {"status": FINISHED})
          writer.close()
        elif run.best is not None and not has_test_record(workdir):  # stopped before testing
          writer = MetricsWriter(workdir, total_steps=num_steps, start_step=run.start_step,
                                 progress=False)
          test_best(run, writer)
          writer.write(run.start_step, "info", {"status": FINISHED})
          writer.close()
        return RunResult(FINISHED, run.start_step, eval_metrics)
      writer = MetricsWriter(workdir, total_steps=num_steps, start_step=run.start_step,
                             progress=config.progress_bar)
      try:
        result = train_loop(run, writer)
        if result.finished and run.best is not None:
          test_best(run, writer)
        writer.write(result.step, "info", {"status": result.status})
      finally:
        writer.close()
    finally:
      run.checkpoints.close()
      if run.best is not None:
        run.best.close()
  return result
