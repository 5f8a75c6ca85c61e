"""What a compiled step costs: XLA's own figures and our count from the traced program.

- `compiled_cost(compiled)`: XLA's FLOPs and bytes per call (and XLA:TPU's cost-model time,
  `optimal_seconds`), and the peak device memory of a compiled executable. Peak memory = temp
  + argument + output bytes - aliased (donated) bytes (`memory_analysis()`, XLA's buffer
  assignment; works on CPU and for compile-only devices).
- `program_cost(jaxpr)`: FLOPs and bytes of the matrix products (dot_general, ragged_dot,
  convolutions) and attention kernels of a traced step, with every scanned layer counted (XLA's
  cost analysis counts a `while` body once, so a scanned stack of L layers shows about 1/L of its
  work, and it does not see inside Pallas kernels or cuDNN calls). This is the model-FLOPs
  convention of MFU (Chowdhery et al. 2022, PaLM, appendix B): matrix products only, the
  elementwise work left out. Bytes are the operands and results of those products (each read
  and written once: a lower bound on memory traffic, as if everything else were fused).

Attention kernels: a Pallas call with a `cost_estimate` counts that; one without (splash) is
counted from the name scope (`encoders.target.kernel_scope`) that the kernel dispatch puts around
it, which holds the forward FLOPs of the attention it computes (4 b h d x visible query-key
pairs); the backward kernels count twice that, once per scope. cuDNN's fused attention counts
4 b h q k d forward and twice that backward.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from encoders.target import KERNEL_SCOPE

_SCOPE = re.compile(KERNEL_SCOPE + r"=(\d+)#(\d+)")
_CUDNN = "dot_product_attention_"  # cuDNN's fused attention: ..._fwd(_wrapper), ..._bwd(...)


def compiled_cost(compiled) -> dict[str, float]:
  """XLA's FLOPs and bytes accessed per step (where the backend gives them) and peak device
  memory (bytes) from XLA's own analyses."""
  out = {}
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and "flops" in cost:
      out["xla_flops_per_step"] = float(cost["flops"])
    if cost and "bytes accessed" in cost:
      out["xla_bytes_per_step"] = float(cost["bytes accessed"])
    if cost and "optimal_seconds" in cost:  # XLA:TPU's cost model of the step time
      out["xla_optimal_seconds"] = float(cost["optimal_seconds"])
  except Exception:  # pylint: disable=broad-except  (backend without cost analysis)
    pass
  try:
    memory = compiled.memory_analysis()
    out["peak_memory_bytes"] = float(
        temp_bytes(memory) + memory.argument_size_in_bytes +
        memory.output_size_in_bytes - memory.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except  (backend without memory analysis)
    pass
  return out


def temp_bytes(memory) -> float:
  """Temporary bytes per device of a `memory_analysis()`. XLA:TPU reports none for a program
  over several devices compiled without them (deviceless), though its peak, arguments +
  outputs + temporaries, still counts them: the larger of the two readings."""
  peak = getattr(memory, "peak_memory_in_bytes", 0) or 0
  return float(max(memory.temp_size_in_bytes,
                   peak - memory.argument_size_in_bytes - memory.output_size_in_bytes))


@dataclasses.dataclass
class ProgramCost:
  """Counted over the whole (global) program: `flops`, `bytes`, and how many kernel calls
  were found with no cost known (`uncounted_kernels`, their work missing from `flops`)."""
  flops: float = 0.0
  bytes: float = 0.0
  uncounted_kernels: int = 0

  def add(self, other: ProgramCost, times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.bytes += times * other.bytes
    self.uncounted_kernels += other.uncounted_kernels


def _nbytes(avals) -> float:
  return float(sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in avals
                   if hasattr(a, "shape")))


def _io_bytes(eqn) -> float:
  return _nbytes([v.aval for v in eqn.invars]) + _nbytes([v.aval for v in eqn.outvars])


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval
  (contract, _), _ = eqn.params["dimension_numbers"]
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[i] for i in contract)


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval
  out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
  per_output = math.prod(rhs.shape) / out_features  # in_features / groups x window
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output


def _sub_jaxprs(eqn):
  """(jaxpr, times) of the programs an equation runs (scan: its length; cond: the costliest
  branch is taken by the caller; while: once, its trip count unknown)."""
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr", "body_jaxpr"):
    sub = eqn.params.get(key)
    if sub is not None:
      yield getattr(sub, "jaxpr", sub), float(eqn.params.get("length", 1))


def program_cost(jaxpr, _seen: set | None = None, _scope: str = "") -> ProgramCost:
  """`ProgramCost` of a (closed) jaxpr; see the module docstring."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  seen = set() if _seen is None else _seen  # kernel scopes already counted (id, direction)
  total = ProgramCost()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    scope = f"{_scope}/{eqn.source_info.name_stack}"  # a nested jaxpr's stack is relative
    if name == "dot_general":
      total.add(ProgramCost(_dot_flops(eqn), _io_bytes(eqn)))
    elif name == "ragged_dot":  # [m, k] x [groups, k, n]: each row meets one group
      m, k = eqn.invars[0].aval.shape
      total.add(ProgramCost(2.0 * m * k * eqn.invars[1].aval.shape[-1], _io_bytes(eqn)))
    elif name == "conv_general_dilated":
      total.add(ProgramCost(_conv_flops(eqn), _io_bytes(eqn)))
    elif name.startswith(_CUDNN) and "fp8" not in name:
      q, k = eqn.invars[0].aval, eqn.invars[1].aval  # [b, q, h, d], [b, k, h, d]
      flops = 4.0 * q.shape[0] * q.shape[2] * q.shape[1] * k.shape[1] * q.shape[3]
      total.add(ProgramCost(flops * (2 if "_bwd" in name else 1), _io_bytes(eqn)))
    elif name == "pallas_call":
      total.add(_kernel_cost(eqn, scope, seen))
    elif name == "cond":
      branches = [program_cost(b, seen, scope) for b in eqn.params["branches"]]
      total.add(max(branches, key=lambda c: c.flops))
    else:
      for sub, times in _sub_jaxprs(eqn):
        total.add(program_cost(sub, seen, scope), times)
  return total


def _kernel_cost(eqn, stack: str, seen: set) -> ProgramCost:
  estimate = eqn.params.get("cost_estimate")
  if estimate is not None:
    return ProgramCost(float(estimate.flops), float(estimate.bytes_accessed))
  found = _SCOPE.findall(stack)
  if not found:
    return ProgramCost(uncounted_kernels=1)
  forward_flops, scope_id = found[-1]
  backward = "transpose" in stack
  if (scope_id, backward) in seen:
    return ProgramCost(bytes=_io_bytes(eqn))
  seen.add((scope_id, backward))
  return ProgramCost(float(forward_flops) * (2 if backward else 1), _io_bytes(eqn))
