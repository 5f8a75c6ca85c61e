"""The platform a computation is compiled for, and what each layer chose for it.

Kernel choices (`attention.implementation=auto`, MoE's `grouped_matmul=auto`, Mamba's
`scan_method=auto`) and the checks of an explicit choice depend on the chips that will run the
program. Those are the devices of the mesh the step is traced under (the runner traces inside
`jax.set_mesh(mesh)`), not the process's default backend: a CPU machine compiling for an H100
(experiments/aot.py) must get the kernels a GPU run gets. `platform()` reads the current mesh's
device platform (`jax.sharding.get_abstract_mesh().abstract_device`, also inside `jit`) and
falls back to `jax.default_backend()` outside any mesh.

`kernel_scope` declares the attention work of a Pallas kernel call (which XLA's cost analysis
cannot see) to the step's FLOP count, experiments/costs.py.

`record()` collects, while a step is traced, one `Choice` per layer (where, what was asked,
what runs, and why `auto` fell back), so the compile report can say which kernel each layer got.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator

import jax

# jax names NVIDIA and AMD devices "gpu" in meshes; some APIs say "cuda"/"rocm".
_ALIASES = {"cuda": "gpu", "rocm": "gpu"}
_recording: list[list[Choice]] = []
# Name scope around a kernel call: "attention_kernel_flops=<forward FLOPs>#<unique id>".
KERNEL_SCOPE = "attention_kernel_flops"
_scope_ids = itertools.count()


def platform() -> str:
  """"cpu", "gpu" or "tpu": the platform of the current mesh's devices, else the default
  backend's."""
  device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  name = device.platform if device is not None else jax.default_backend()
  return _ALIASES.get(name, name)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One layer's decision: `kind` (attention, moe, scan), the layer's module path, the value
  asked for, the one that runs and, when they differ for `auto`, the reason."""
  kind: str
  where: str
  requested: str
  chosen: str
  reason: str = ""


def note(kind: str, module, requested: str, chosen: str, reason: str = "") -> None:
  """Records a choice if a `record()` is active (a no-op otherwise)."""
  if _recording:
    path = getattr(module, "path", None) or ()
    where = "/".join(str(p) for p in path) or type(module).__name__
    _recording[-1].append(Choice(kind, where, str(requested), chosen, reason))


@contextlib.contextmanager
def record() -> Iterator[list[Choice]]:
  """Collects the `Choice`s of everything traced inside (duplicates removed on exit)."""
  choices: list[Choice] = []
  _recording.append(choices)
  try:
    yield choices
  finally:
    _recording.pop()
    unique = list(dict.fromkeys(choices))
    choices[:] = unique


def kernel_scope(batch: int, head_dim: int, pairs: int):
  """A `jax.named_scope` declaring the attention computed inside: `pairs` visible query-key
  pairs summed over heads, so 4 x batch x head_dim x pairs forward FLOPs (QK^T and PV)."""
  return jax.named_scope(f"{KERNEL_SCOPE}={4 * batch * head_dim * pairs}#{next(_scope_ids)}")
