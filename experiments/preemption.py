"""SIGTERM -> save a checkpoint at the current step and exit cleanly.

Schedulers (SLURM, Kubernetes, Cloud TPU maintenance) send SIGTERM before killing a job. With
`train.save_on_sigterm`, the runner finishes the step in flight, saves a checkpoint, and
returns; `python -m experiments.main` then exits 0 and re-running the command resumes. With
several processes, JAX's own preemption sync point (`jax.distributed` registers the SIGTERM
notifier) makes every process stop at the same step.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Context manager; `requested(step)` says whether to save and stop after `step`."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self._flag = False
    self._previous = None

  def __enter__(self) -> PreemptionWatch:
    single = jax.process_count() == 1
    if self.enabled and single and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._flag = True

  def requested(self, step: int) -> bool:
    if not self.enabled:
      return False
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
