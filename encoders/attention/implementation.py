"""Which code computes an attention layer: `model.attention.implementation`.

- `xla`: our XLA paths (dense: `jax.nn.dot_product_attention` or an explicit softmax;
  block-sparse: the engine in `sparse_engine.py`); runs everywhere.
- `splash`: TPU splash attention (`kernels/splash.py`), dense and every block-sparse layout.
- `pallas_gpu`: our Pallas/Triton block-sparse flash kernel (`kernels/pallas_gpu.py`), dense
  (a full layout) and every block-sparse layout.
- `cudnn`: cuDNN's fused attention through `jax.nn.dot_product_attention`; dense only, unpacked
  rows only (it takes no segment ids), and whatever jax's own cuDNN checks accept (asked on the
  layer's shapes before choosing, so a refusal is a reason, not a traceback).
- `auto` (default): by the platform compiled for (the mesh's devices, `encoders/target.py`) and
  by what the kernel can express. TPU: `splash`; GPU: `cudnn` (dense, where it serves: bf16 or
  fp16, unpacked rows), else `pallas_gpu`; CPU: `xla`. When the preferred kernel cannot serve a
  layer (say a position bias on the logits), `auto` falls back to `xla` and logs why, once.

An explicit request that cannot be served is a one-line `ConfigError` naming the reason, raised
when the layer is first traced (before anything compiles). Kernels run on their own hardware;
`interpret=True` runs the Pallas ones (splash, pallas_gpu) in Pallas' interpreter on any
backend, which is how the CPU tests check them against `xla`.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from encoders import target
from encoders.attention.base import Attention
from encoders.errors import ConfigError

IMPLEMENTATIONS = ("auto", "xla", "splash", "pallas_gpu", "cudnn")
KERNEL_BACKEND = {"splash": "tpu", "pallas_gpu": "gpu", "cudnn": "gpu"}
_PALLAS = ("splash", "pallas_gpu")
_logged: set[tuple[str, str, str]] = set()


def _power_of_two(value: int) -> bool:
  return value >= 16 and value & (value - 1) == 0


def problems(supported: tuple[str, ...], *, interpret: bool, head_dim: int, dtype,
             has_bias: bool, dropout: bool, tile: int, kernel_block_size: int | None,
             packed: bool = False, shape: tuple[int, ...] | None = None,
             ) -> dict[str, str | None]:
  """For each implementation a variant supports: None if it can serve this layer, else why not.

  `tile`: the Pallas GPU kernel's block (a layout's block size); `kernel_block_size`: splash's;
  `packed`: the rows carry segment ids; `shape`: q's [batch, length, heads, head_dim], with
  which jax's own cuDNN checks are asked (`_cudnn_refusal`).
  """
  out = {}
  backend = target.platform()
  for name in supported:
    reason = None
    if name != "xla":
      if has_bias:
        reason = "it cannot add a position bias to the logits (ALiBi, T5 buckets)"
      elif dropout:
        reason = "it has no attention dropout (model.attention_dropout_rate > 0 in training)"
      elif backend != KERNEL_BACKEND[name] and not (interpret and name in _PALLAS):
        reason = (f"it runs on {KERNEL_BACKEND[name]}, compiling for {backend}"
                  + (" (interpret=True runs it interpreted)" if name in _PALLAS else ""))
    if reason is None and name == "cudnn":
      if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        reason = f"cuDNN needs bfloat16/float16 compute, got {jnp.dtype(dtype).name}"
      elif head_dim > 128 or head_dim % 8:
        reason = f"cuDNN needs head_dim <= 128 and a multiple of 8, got {head_dim}"
      elif packed:
        reason = ("jax's cuDNN attention takes no segment ids: a packed row's mask would be a "
                  "dense [length, length] bias")
      elif shape is not None:
        reason = _cudnn_refusal(shape, dtype)
    if reason is None and name == "pallas_gpu":
      if not _power_of_two(head_dim):
        reason = f"it needs a power-of-two head_dim >= 16, got {head_dim}"
      elif not _power_of_two(tile):
        reason = f"it needs a power-of-two block size >= 16, got {tile}"
    if reason is None and name == "splash" and kernel_block_size is not None:
      if kernel_block_size % 128:
        reason = f"its kernel_block_size must be a multiple of 128, got {kernel_block_size}"
    out[name] = reason
  return out


def _cudnn_refusal(shape: tuple[int, ...], dtype) -> str | None:
  """jax's own cuDNN checks (head dim, sequence lengths, cuDNN and GPU versions), run on shapes
  alone: what they refuse, in one line, or None."""
  q = jax.ShapeDtypeStruct(shape, dtype)
  lengths = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
  try:
    jax.eval_shape(functools.partial(jax.nn.dot_product_attention, implementation="cudnn"),
                   q, q, q, key_value_seq_lengths=lengths)
  except (NotImplementedError, ValueError, RuntimeError) as refusal:
    return f"jax's cuDNN attention refuses it: {str(refusal).splitlines()[0]}"
  return None


def choose(requested: str, variant: str, preferred: dict[str, tuple[str, ...]],
           problems_by_name: dict[str, str | None], layer=None) -> str:
  """The implementation to run. `preferred`: platform -> kernels `auto` tries in order before
  `xla`; `problems_by_name`: `problems(...)` of this layer; `layer` (the module) names it in
  `target.record()`."""
  if requested is None:  # written by configs from before this choice: JAX's default, XLA
    requested = "xla"
  if requested not in IMPLEMENTATIONS:
    raise ConfigError(f"model.attention.implementation={requested!r}; allowed: "
                      f"{', '.join(IMPLEMENTATIONS)}")
  if requested == "auto":
    reasons = []
    for name in preferred.get(target.platform(), ()):
      reason = problems_by_name.get(name)
      if reason is None:
        target.note("attention", layer, requested, name)
        return name
      reasons.append(f"not {name}: {reason}")
      key = (variant, name, reason)
      if key not in _logged:
        _logged.add(key)
        logging.info("attention %s: implementation auto runs xla, not %s: %s", variant, name,
                     reason)
    target.note("attention", layer, requested, "xla", "; ".join(reasons))
    return "xla"
  if requested not in problems_by_name:
    raise ConfigError(f"model.attention.implementation={requested!r} is not available for "
                      f"attention {variant!r}; allowed: auto, {', '.join(problems_by_name)}")
  reason = problems_by_name[requested]
  if reason is not None:
    raise ConfigError(f"model.attention.implementation={requested!r} cannot serve attention "
                      f"{variant!r}: {reason}")
  target.note("attention", layer, requested, requested)
  return requested


def resolve(layer, q: jax.Array, *, has_bias: bool, supported: tuple[str, ...],
            preferred: dict[str, tuple[str, ...]], tile: int, packed: bool = False) -> str:
  """`choose` for an attention layer with `implementation`, `interpret` and
  `kernel_block_size` fields, given its q [batch, length, heads, head_dim] and whether its rows
  are packed (segment ids)."""
  if not isinstance(layer.interpret, bool):
    raise ConfigError(f"model.attention.interpret={layer.interpret!r} must be true or false")
  size = layer.kernel_block_size
  if size is not None and not (isinstance(size, int) and size >= 16):
    raise ConfigError(f"model.attention.kernel_block_size={size!r} must be None or an "
                      "integer >= 16")
  found = problems(supported, interpret=layer.interpret, head_dim=q.shape[-1],
                   dtype=layer.config.compute_dtype, has_bias=has_bias,
                   dropout=layer.config.attention_dropout_rate > 0, tile=tile,
                   kernel_block_size=size, packed=packed, shape=q.shape)
  return choose(layer.implementation, layer.registry_name, preferred, found, layer)


class KernelAttention(Attention):
  """An attention variant that the kernels can run: the options they share, declared once.
  Subclasses set `SUPPORTED` (implementations besides `auto`), `PREFERRED` (platform -> what
  `auto` tries before xla) and `kernel_tile` (pallas_gpu's block)."""
  implementation: str = "auto"  # auto | xla | splash | pallas_gpu (| cudnn for dense)
  interpret: bool = False  # run the Pallas kernels interpreted (CPU tests)
  kernel_block_size: int | None = None  # splash's tile (a multiple of 128; None: the layout's
  # block rounded up to 128, 512 for dense), and dense pallas_gpu's (None: 64)
  SUPPORTED = ("xla",)
  PREFERRED = {}  # platform -> implementations `auto` tries before xla

  def kernel_tile(self) -> int:
    raise TypeError(f"{type(self).__name__} is abstract: a kernel variant defines kernel_tile()")

  def chosen_implementation(self, q: jax.Array, *, bias, segment_ids) -> str:
    """The implementation this call runs (`resolve`)."""
    return resolve(self, q, has_bias=bias is not None, supported=self.SUPPORTED,
                   preferred=self.PREFERRED, tile=self.kernel_tile(),
                   packed=segment_ids is not None)
