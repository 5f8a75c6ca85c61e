"""Device mesh and shardings for the runner (JAX's own `jax.sharding`, GSPMD).

`config.mesh = dict(data=-1, fsdp=1, tensor=1, expert=1)`: one size per named axis, -1 takes
the remaining devices. Logical axis names on parameters and activations (encoders/sharding.py)
map to these axes by `DEFAULT_RULES`. One device is a 1x1x1x1 mesh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from encoders.errors import ConfigError
from encoders.sharding import DEFAULT_RULES, MESH_AXES


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves -1 and checks the product equals the device count (one-line errors)."""
  unknown = sorted(set(sizes) - set(MESH_AXES))
  if unknown:
    raise ConfigError(f"mesh.{unknown[0]} is not a mesh axis; allowed: {', '.join(MESH_AXES)}")
  shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
  if shape.count(-1) > 1:
    raise ConfigError("mesh: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError(f"mesh: {num_devices} devices are not divisible by the fixed axes "
                       f"({known}) of {dict(zip(MESH_AXES, shape))}")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, shape))} has {math.prod(shape)} devices; "
                     f"this run has {num_devices}")
  return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices=None) -> Mesh:
  """Auto (GSPMD) axes: XLA propagates shardings from the logical constraints. `devices`: all
  of this process's by default; compile-only devices of another platform for experiments/aot."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(sizes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules(overrides=()) -> tuple:
  return tuple(overrides) + DEFAULT_RULES


def logical_shardings(abstract_boxed, mesh: Mesh, axis_rules):
  """NamedShardings for a pytree whose leaves are (possibly) nn.Partitioned abstract arrays.

  A dimension that its mesh axes do not divide (an odd vocabulary on `tensor`, 2 heads on a
  tensor axis of 4) is replicated instead of failing.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, axis_rules)
  return jax.tree.map(fit_to_shape, strip_boxes(abstract_boxed), shardings)


def fit_to_shape(abstract: jax.ShapeDtypeStruct, sharding: NamedSharding) -> NamedSharding:
  """`sharding` with the mesh axes dropped from every dimension they do not divide."""
  spec = tuple(sharding.spec) + (None,) * (len(abstract.shape) - len(sharding.spec))
  fitted = []
  for size, axes in zip(abstract.shape, spec):
    names = axes if isinstance(axes, tuple) else (axes,)
    shards = math.prod(sharding.mesh.shape[a] for a in names if a is not None)
    fitted.append(axes if size % shards == 0 else None)
  return NamedSharding(sharding.mesh, PartitionSpec(*fitted))


def strip_boxes(tree):
  """Replaces nn.Partitioned boxes by their values (no sharding constraint applied)."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of the batch into global device arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def check_batch_divisible(batch_size: int, mesh: Mesh, field: str, micro_batches: int = 1
                          ) -> None:
  """One-line error unless every device (and every micro-batch) gets whole examples."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % jax.process_count() or batch_size % (shards * micro_batches):
    what = (f"data x fsdp x train.grad_accum_steps = {shards} x {micro_batches}"
            if micro_batches > 1 else f"data x fsdp = {shards}")
    raise ConfigError(f"{field}={batch_size} must be divisible by {what} and by the process "
                     f"count {jax.process_count()}")
