"""Accelerators to compile for without having them: compile-only devices and their peak figures.

GPU targets are `h100`, `h200`, `a100`, optionally with a device count (`h100:8`: 8 GPUs on one
host). Their devices come from `jax.experimental.topologies.get_topology_desc(..., "cuda",
target_config=...)` with the GpuTargetConfigProto written by `gpu_target_config` from the facts
below: the device descriptions of XLA's GPU target-config specs (`h100_sxm`, `h200`,
`a100_sxm_80` in xla/backends/gpu/target_config/specs), trimmed to the fields jaxlib 0.10's
proto reads. TPU targets are libtpu's topology names (`v4:2x2x1`, `v5e:2x2`, `v5e:4x4`,
`v5p:2x2x1`, `v6e:2x2`; libtpu refuses `v5e:1x1`).

Peak figures (dense matrix throughput, memory bandwidth) are the vendors' datasheet numbers:
NVIDIA's H100 SXM, H200 SXM and A100 SXM 80GB datasheets; Google Cloud's TPU v4, v5e, v5p and
v6e system architecture pages. `matmul_peak` is what a float32 model's products run at with
JAX's default precision: TF32 tensor cores on A100/H100/H200, one bfloat16 pass on TPU.
"""

from __future__ import annotations

import dataclasses
import os

from encoders.errors import ConfigError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator: memory per device (bytes), HBM bandwidth (bytes/s), dense peak FLOP/s
  by compute dtype, and for GPUs the target-config facts."""
  name: str
  platform: str  # "gpu" or "tpu"
  memory_bytes: float
  bandwidth: float
  peak_bf16: float
  peak_f32: float  # float32 products at JAX's default precision (TF32 on GPU, bf16 pass on TPU)
  gpu: dict | None = None  # gpu_device_info fields (GPUs only)

  def matmul_peak(self, dtype: str) -> float:
    return self.peak_f32 if dtype == "float32" else self.peak_bf16


_HOPPER = dict(shared_memory_per_core=233472, core_count=132, fpus_per_core=128,
               l2_cache_size=52428800, clock_rate_ghz=1.98, shared_memory_per_block_optin=232448,
               cc_major=9, cc_minor=0)
CHIPS = {
    "h100": Chip("NVIDIA H100 80GB HBM3", "gpu", 84942979072, 3.35e12, 989e12, 494.5e12,
                 dict(_HOPPER, memory_bandwidth=3352320000000, device_memory_size=84942979072)),
    "h200": Chip("NVIDIA H200 141GB HBM3e", "gpu", 151397597184, 4.8e12, 989e12, 494.5e12,
                 dict(_HOPPER, memory_bandwidth=4800000000000, device_memory_size=151397597184)),
    "a100": Chip("NVIDIA A100-SXM4-80GB", "gpu", 85100068864, 2.039e12, 312e12, 156e12,
                 dict(shared_memory_per_core=167936, core_count=108, fpus_per_core=64,
                      l2_cache_size=41943040, clock_rate_ghz=1.41,
                      shared_memory_per_block_optin=166912, cc_major=8, cc_minor=0,
                      memory_bandwidth=2039040000000, device_memory_size=85100068864)),
    "v4": Chip("TPU v4", "tpu", 32 * GIB, 1.2e12, 275e12, 275e12),
    "v5e": Chip("TPU v5 lite", "tpu", 16 * GIB, 8.19e11, 197e12, 197e12),
    "v5p": Chip("TPU v5", "tpu", 95 * GIB, 2.765e12, 459e12, 459e12),
    "v6e": Chip("TPU v6 lite", "tpu", 32 * GIB, 1.64e12, 918e12, 918e12),
}
GPUS = tuple(k for k, c in CHIPS.items() if c.platform == "gpu")
TPUS = tuple(k for k, c in CHIPS.items() if c.platform == "tpu")


def chip_of(device) -> Chip | None:
  """The chip a real (or compile-only) device is, from its device kind; None if unknown."""
  kind = getattr(device, "device_kind", "")
  for key, chip in CHIPS.items():
    if (chip.platform == "gpu" and key.upper() in kind) or kind == chip.name:
      return chip
  return None


def gpu_target_config(chip: Chip) -> str:
  """The GpuTargetConfigProto (text format) of a GPU chip."""
  g = chip.gpu
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {g['shared_memory_per_core']}
  threads_per_core_limit: 2048
  core_count: {g['core_count']}
  fpus_per_core: {g['fpus_per_core']}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {g['memory_bandwidth']}
  l2_cache_size: {g['l2_cache_size']}
  clock_rate_ghz: {g['clock_rate_ghz']}
  device_memory_size: {g['device_memory_size']}
  shared_memory_per_block_optin: {g['shared_memory_per_block_optin']}
  cuda_compute_capability {{
    major: {g['cc_major']}
    minor: {g['cc_minor']}
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 10
  patch: 0
}}
device_description_str: "{chip.name}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
  """A compile target: its name as given, the chip, and the compile-only devices."""
  name: str
  chip: Chip
  devices: tuple


def missing_extra() -> str:
  """'' if jax's CUDA plugin and libtpu are importable, else the one-line hint."""
  import importlib.util  # pylint: disable=import-outside-toplevel

  missing = [m for m in ("jax_plugins.xla_cuda12", "libtpu")
             if importlib.util.find_spec(m.split(".")[0]) is None
             or (m.startswith("jax_plugins") and importlib.util.find_spec(m) is None)]
  if not missing:
    return ""
  return (f"compiling for accelerators needs the [aot] extra ({', '.join(missing)} not "
          "installed): pip install -e '.[aot]'")


def parse(name: str) -> tuple[str, str, int]:
  """(chip key, topology, device count) of a target name; one-line error if unknown."""
  chip, _, shape = name.partition(":")
  allowed = (f"allowed: {', '.join(GPUS)} (optionally ':<devices>', e.g. h100:8) or a TPU "
             f"topology {', '.join(t + ':<shape>' for t in TPUS)} (e.g. v5e:2x2, v4:2x2x1)")
  if chip not in CHIPS:
    raise ConfigError(f"--target={name!r}: unknown chip {chip!r}; {allowed}")
  if CHIPS[chip].platform == "gpu":
    if shape and not (shape.isdigit() and int(shape) > 0):
      raise ConfigError(f"--target={name!r}: a GPU count must be a positive integer; {allowed}")
    count = int(shape or 1)
    return chip, f"1x1x{count}", count
  dims = shape.split("x")
  if not shape or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise ConfigError(f"--target={name!r}: a TPU target needs a topology shape; {allowed}")
  count = 1
  for d in dims:
    count *= int(d)
  return chip, name, count


def resolve(name: str) -> Target:
  """The target's compile-only devices (needs the [aot] extra)."""
  chip_key, topology, _ = parse(name)
  if hint := missing_extra():
    raise ConfigError(hint)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  chip = CHIPS[chip_key]
  if chip.platform == "tpu":
    description = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  else:
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")  # no driver needed
    description = topologies.get_topology_desc(
        chip_key, "cuda", target_config=gpu_target_config(chip), topology=topology)
  return Target(name, chip, tuple(description.devices))
