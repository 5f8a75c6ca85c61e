"""Orbax checkpointing: save every N steps and at the end, keep K, async, auto-resume.

Checkpoints live in `<workdir>/checkpoints/<step>/`. Orbax writes to a temporary directory and
renames it when complete, so a crash mid-save never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from encoders.errors import ConfigError


class Checkpoints:
  """Thin wrapper over `ocp.CheckpointManager` for one train-state pytree."""

  def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int,
               keep_period: int | None = None, async_save: bool = True):
    if save_every <= 0:
      raise ConfigError(f"train.checkpoint_every={save_every} must be positive")
    if keep <= 0:
      raise ConfigError(f"train.keep_checkpoints={keep} must be positive")
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, max_to_keep=keep, keep_period=keep_period or None,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, abstract_state):
    """The latest saved state laid out like `abstract_state` (ShapeDtypeStructs with
    shardings), or None when there is no checkpoint."""
    step = self.manager.latest_step()
    if step is None:
      return None
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it saved."""
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for `restore_latest`."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)
