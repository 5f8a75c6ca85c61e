"""Orbax checkpointing: save every N steps and at the end, keep K (and every `keep_period`-th),
async, auto-resume, and safe restore.

Checkpoints live in `<workdir>/checkpoints/<step>/`. Orbax writes into a temporary directory and
renames it when complete, so a crash mid-save never leaves a checkpoint that looks finished.
On restore the newest checkpoint is tried first; one that cannot be read (truncated or
corrupted files) is reported in one line, moved to `<workdir>/checkpoints_unreadable/<step>`
(kept for inspection, never deleted) and the next older one is used. A checkpoint whose
parameter shapes differ from the model is refused with the mismatching paths named.
"""

from __future__ import annotations

import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from encoders.errors import ConfigError
from experiments import distributed


class Checkpoints:
  """Thin wrapper over `ocp.CheckpointManager` for one train-state pytree."""

  def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int,
               keep_period: int | None = None, async_save: bool = True):
    if save_every <= 0:
      raise ConfigError(f"train.checkpoint_every={save_every} must be positive")
    if keep <= 0:
      raise ConfigError(f"train.keep_checkpoints={keep} must be positive")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, max_to_keep=keep, keep_period=keep_period or None,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state):
    """The newest readable state laid out like `abstract_state` (ShapeDtypeStructs with
    shardings), or None when there is no checkpoint."""
    for step in reversed(self.all_steps()):
      check_compatible(self.manager, step, abstract_state)
      try:
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as error:  # pylint: disable=broad-except  (any unreadable file)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        self._quarantine(step)
        message = (f"checkpoint {self.directory}/{step} is unreadable ({type(error).__name__}: "
                   f"{reason}); moved it to checkpoints_unreadable/{step}, trying an older one")
        logging.warning("%s", message)
        print(f"warning: {message}", flush=True)
    return None

  def _quarantine(self, step: int) -> None:
    target_root = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable")
    if jax.process_index() == 0:
      os.makedirs(target_root, exist_ok=True)
      target = os.path.join(target_root, str(step))
      if os.path.exists(target):
        target = f"{target}.{int(time.time())}"
      shutil.move(os.path.join(self.directory, str(step)), target)
    distributed.barrier(f"quarantine-{step}")  # the others reload after the move
    self.manager.reload()

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it saved."""
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """'params/encoder/.../kernel' -> shape, with attribute, dict and index keys alike."""
  def name(entry) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)
  return {"/".join(name(e) for e in path): tuple(getattr(leaf, "shape", ()) or ())
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state) -> None:
  """Raises a one-line ConfigError naming the entries whose shapes differ."""
  try:
    saved_tree = manager.item_metadata(step)
  except Exception:  # pylint: disable=broad-except  (unreadable metadata: restore reports it)
    return
  if saved_tree is None:
    return
  saved, wanted = _shapes(saved_tree), _shapes(abstract_state)
  problems = [f"{k}: checkpoint {saved[k]} vs model {v}"
              for k, v in wanted.items() if k in saved and saved[k] != v]
  problems += [f"{k}: missing from the checkpoint" for k in wanted if k not in saved]
  problems += [f"{k}: not in the model" for k in saved if k not in wanted]
  if problems:
    problems.sort(key=lambda p: not p.startswith("params/"))
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise ConfigError(f"checkpoint {manager.directory}/{step} was written by a different model "
                      f"({'; '.join(problems[:3])}{more}); use a new workdir")


def abstract_like(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for `restore_latest`."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


class BestCheckpoint:
  """The parameters with the best eval value of one metric so far (`eval.select_best`), in
  `<workdir>/checkpoints_best/<step>/` (one kept; written synchronously when the value improves
  strictly).

  Resuming: a best checkpoint newer than the resumed step is deleted, because the resumed run
  evaluates that step again with the same parameters (resumes are bitwise) and writes it back;
  the value of the one kept is its step's eval record in metrics.jsonl, which is written before
  the checkpoint and kept on resume.
  """

  def __init__(self, directory: str | os.PathLike, metric: str, mode: str):
    if mode not in ("max", "min"):
      raise ConfigError(f"eval.select_mode={mode!r}; allowed: max, min")
    self.metric, self.mode = metric, mode
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())
    self.step: int | None = None
    self.value: float | None = None

  def resume(self, start_step: int, eval_records: list[dict]) -> None:
    """Drops best checkpoints after `start_step`; reads the kept one's value."""
    for step in self.manager.all_steps():
      if step > start_step:
        self.manager.delete(step)
    steps = self.manager.all_steps()
    if steps:
      values = {r["step"]: r.get(self.metric) for r in eval_records}
      self.step, self.value = steps[-1], values.get(steps[-1])

  def offer(self, step: int, metrics: dict[str, float], params) -> bool:
    """Saves `params` if `metrics[metric]` beats the best so far; returns whether it did."""
    if self.metric not in metrics:
      raise ConfigError(f"eval.select_best={self.metric!r} is not an eval metric of this "
                        f"task; allowed: {', '.join(sorted(metrics))}")
    value = float(metrics[self.metric])
    if self.value is not None and not (value > self.value if self.mode == "max"
                                       else value < self.value):
      return False
    self.manager.save(step, args=ocp.args.StandardSave(params), force=True)
    self.manager.wait_until_finished()
    self.step, self.value = step, value
    return True

  def restore(self, abstract_params):
    """The best parameters laid out like `abstract_params`."""
    return self.manager.restore(self.step, args=ocp.args.StandardRestore(abstract_params))

  def close(self) -> None:
    self.manager.close()
