"""Multi-host start-up on JAX's multi-controller runtime (`jax.distributed`).

Every host (or every GPU, with one process per GPU) runs the same command; the processes find
each other through a coordinator (process 0's `host:port`) and from then on
`jax.devices()` lists the devices of all of them, so one global mesh spans the whole job
(experiments/partitioning.py). `initialize()` must run before anything touches a device; the
CLI (experiments/main.py) calls it first.

Where the coordinator comes from, first match wins:

1. arguments (the CLI flags `--coordinator_address`, `--num_processes`, `--process_id`);
2. environment variables `ENCODERS_COORDINATOR` (host:port), `ENCODERS_NUM_PROCESSES`,
   `ENCODERS_PROCESS_ID`;
3. a cluster that `jax.distributed.initialize()` detects on its own: Cloud TPU VMs (pod
   slices), SLURM (`srun`), Open MPI (`mpirun`); it is called without arguments there;
4. otherwise a single process: nothing to do.

On CPU, cross-process collectives need an implementation: `gloo` is selected before the
backend starts (a no-op for GPU and TPU computations).
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

from encoders.errors import ConfigError

ENV_COORDINATOR = "ENCODERS_COORDINATOR"
ENV_NUM_PROCESSES = "ENCODERS_NUM_PROCESSES"
ENV_PROCESS_ID = "ENCODERS_PROCESS_ID"

# Environment variables by which a launcher that jax.distributed detects announces itself.
_CLUSTER_VARIABLES = {
    "SLURM": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID"),
    "Open MPI": ("OMPI_MCA_orte_hnp_uri",),
}
_TPU_VARIABLES = ("TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "CLOUD_TPU_TASK_ID")


def detected_cluster(environ=None) -> str | None:
  """The launcher `jax.distributed.initialize()` can configure itself from, or None."""
  environ = os.environ if environ is None else environ
  for name, variables in _CLUSTER_VARIABLES.items():
    if all(v in environ for v in variables):
      return name
  if any(v in environ for v in _TPU_VARIABLES) or os.path.exists("/dev/accel0"):
    return "Cloud TPU"
  return None


def _int_or_none(value, field: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{field}={value!r} must be an integer") from None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, environ=None) -> dict | None:
  """The explicit `jax.distributed.initialize` arguments (flags, then environment), {} for
  auto-detection, or None for a single process. One-line ConfigError when incomplete."""
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get(ENV_COORDINATOR) or None
  count = num_processes if num_processes is not None else _int_or_none(
      environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
  index = process_id if process_id is not None else _int_or_none(
      environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  if address is None and count is None and index is None:
    return {} if detected_cluster(environ) else None
  if address is None or count is None or index is None:
    raise ConfigError("multi-process runs need all of --coordinator_address (host:port), "
                      "--num_processes and --process_id (or the ENCODERS_* variables); got "
                      f"address={address!r}, num_processes={count!r}, process_id={index!r}")
  if count < 1 or not 0 <= index < count:
    raise ConfigError(f"--process_id={index} must be in [0, --num_processes={count})")
  return dict(coordinator_address=address, num_processes=count, process_id=index)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the multi-process job if there is one; returns whether it did."""
  args = resolve(coordinator_address, num_processes, process_id)
  if args is None:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**args)
  return True


def barrier(name: str) -> None:
  """Waits until every process reaches this point (no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
