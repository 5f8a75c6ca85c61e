"""Mixed-precision matmuls: low-precision inputs, float32 accumulation.

Mixed precision as in Micikevicius et al. 2018, "Mixed Precision Training": parameters stay
float32 (the master copy the optimizer updates), each matmul reads its operands in the compute
dtype (`model.dtype`, e.g. bfloat16) and accumulates in float32
(`preferred_element_type=float32`); softmax, norms, losses and routers run in float32.

Asking for the float32 result is also what makes bfloat16 fast on CPU: XLA:CPU runs a
bf16 x bf16 -> bf16 dot through float32 (no faster than float32), while a bf16 x bf16 -> f32
dot uses the native bf16 units (about 2x faster on this machine), in the forward and, through
a custom VJP, in both backward matmuls. With `dtype=float32` both helpers are exactly the plain
float32 matmul.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
  """`jnp.einsum(spec, a, b)` with both operands cast to `dtype`; the result is float32.

  `spec` is explicit ("lhs,rhs->out") and no index is summed within one operand. Below float32
  the backward pass casts the incoming gradient to `dtype` too, so its two matmuls also take
  low-precision operands with float32 accumulation (a plain transpose would multiply a
  float32 gradient by a bf16 operand: a float32 matmul). Batched products (attention scores
  and values) keep the plain transpose: XLA:CPU has no bf16 x bf16 -> f32 kernel for some of
  their transposed layouts ("Unsupported element type for DotThunk").
  """
  operands, out = spec.split("->")
  lhs, rhs = operands.split(",")
  batched = set(lhs) & set(rhs) & set(out) - {"."}
  if jnp.dtype(dtype) == jnp.float32 or batched:
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
  return _mixed_einsum(spec, a.astype(dtype), b.astype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _mixed_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _mixed_einsum_fwd(spec, a, b):
  return _mixed_einsum(spec, a, b), (a, b)


def _mixed_einsum_bwd(spec, residuals, g):
  a, b = residuals
  operands, out = spec.split("->")
  lhs, rhs = operands.split(",")
  g = g.astype(a.dtype)
  da = _mixed_einsum(f"{out},{rhs}->{lhs}", g, b)
  db = _mixed_einsum(f"{lhs},{out}->{rhs}", a, g)
  return da.astype(a.dtype), db.astype(b.dtype)


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def _dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                 out_dtype=None):
  """nn.Dense's contraction (last axis of lhs with the first of a 2-D kernel) via `einsum`."""
  del precision, preferred_element_type  # always float32 accumulation
  if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or rhs.ndim != 2:
    raise ValueError(f"precision.dot_general: unsupported dimension numbers {dimension_numbers}")
  y = einsum("...a,ab->...b", lhs, rhs, lhs.dtype)
  return y.astype(out_dtype or lhs.dtype)


def dot_general(out_dtype=None):
  """A `dot_general` for `nn.Dense(dot_general=...)`: float32 accumulation, the result cast
  to `out_dtype` (default: the dtype of the inputs, i.e. the Dense's compute dtype)."""
  return functools.partial(_dot_general, out_dtype=out_dtype)
