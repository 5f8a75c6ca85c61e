"""SIGTERM -> save a checkpoint at the current step and stop cleanly.

Schedulers (SLURM, Kubernetes, Cloud TPU maintenance, preemptible VMs) send SIGTERM before
killing a job. With `train.save_on_sigterm`, the runner finishes the step in flight, saves a
checkpoint, and returns; `python -m experiments.main` then exits 0 and re-running the command
resumes. With several processes, JAX's own preemption sync point (`jax.distributed` registers
the SIGTERM notifier) makes every process stop at the same step.

The request is one flag per process: watches nest (a study's watch around all its cells, each
cell's run inside it), so a SIGTERM that arrives while a cell is being set up or compiled is
still seen by that cell's loop after its next step, and by the study between cells. A disabled
watch (`save_on_sigterm=False`) restores the default action: SIGTERM ends the process at once.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils

_requested = threading.Event()  # set by the handler; cleared when the outermost watch starts
_depth = 0  # how many watches are entered


def _handle(signum, frame):  # pylint: disable=unused-argument
  _requested.set()


def requested() -> bool:
  """Whether this process received SIGTERM while a watch was installed."""
  return _requested.is_set()


class PreemptionWatch:
  """Context manager; `requested(step)` says whether to save and stop after `step`."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self._previous = None
    self._installed = False

  def __enter__(self) -> PreemptionWatch:
    global _depth  # pylint: disable=global-statement
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      if _depth == 0:
        _requested.clear()
      self._previous = signal.signal(signal.SIGTERM, _handle if self.enabled else signal.SIG_DFL)
      self._installed = True
      _depth += 1
    return self

  def requested(self, step: int) -> bool:
    if not self.enabled:
      return False
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return _requested.is_set()

  def __exit__(self, *exc) -> None:
    global _depth  # pylint: disable=global-statement
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      _depth -= 1
