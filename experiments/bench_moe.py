"""MoE layer benchmark: forward + backward time of one MoE FFN vs a dense FFN with the same
active parameters, measured in the same run (part of the model benchmark):

    python -m experiments.bench_model --moe

Defaults follow the issue: E=8 experts, top-2, dim 256, expert width 1024, 4096 tokens
(8 x 512). The reference is a dense `mlp` FFN of width top_k * 1024 (same parameters per token
and same matmul FLOPs as the MoE's experts). Every row: jit(value_and_grad) of
sum(y * g) for a fixed random g w.r.t. params and input; one warm-up call, then `repeats`
rounds calling every variant once each (interleaved, so load drift on a shared machine hits all
alike), median per variant.
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders.config import ModelConfig

# (row label, ffn spec); the first is the reference. {k} is top_k.
VARIANTS = (
    ("dense mlp, width k*ffn (same active params)", None),
    ("moe dropless (blocked grouped matmul)", dict(dispatch="dropless", grouped_matmul="blocked")),
    ("moe dropless (jax.lax.ragged_dot)", dict(dispatch="dropless", grouped_matmul="ragged")),
    ("moe capacity (factor 1.25)", dict(dispatch="capacity", eval_capacity_factor=1.25)),
    ("moe expert choice (factor 1.0)", dict(router="expert_choice", eval_capacity_factor=1.0)),
)


def _cell(spec, *, num_experts, top_k, dim, ffn, batch, length):
  """(jitted fwd+bwd, its arguments) of one FFN layer."""
  if spec is None:
    ffn_spec = dict(name="mlp")
    mlp_dim = top_k * ffn
  else:
    ffn_spec = dict(name="moe", num_experts=num_experts, top_k=top_k, **spec)
    mlp_dim = ffn
  config = ModelConfig.from_dict(dict(vocab_size=32, dim=dim, num_layers=1, num_heads=4,
                                      mlp_dim=mlp_dim, dropout_rate=0.0, ffn=ffn_spec))
  layer = config.build("ffn")
  rng = jax.random.PRNGKey(0)
  x = jax.random.normal(rng, (batch, length, dim), jnp.float32)
  g = jax.random.normal(jax.random.fold_in(rng, 1), x.shape, jnp.float32)
  tokens = jax.random.randint(rng, (batch, length), 0, 32)
  kwargs = {} if spec is None else {"token_ids": tokens}
  params = nn.unbox(jax.jit(lambda: layer.init(rng, x, **kwargs))())

  def loss(params, x):
    y, _ = layer.apply(params, x, **kwargs)
    return jnp.sum(y * g)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (params, x)


def benchmark(*, num_experts: int = 8, top_k: int = 2, dim: int = 256, ffn: int = 1024,
              batch: int = 8, length: int = 512, repeats: int = 10,
              variants=VARIANTS) -> list[dict]:
  """One row per variant: label, median fwd+bwd ms, ratio to the first variant."""
  cells = []
  for label, spec in variants:
    step, args = _cell(spec, num_experts=num_experts, top_k=top_k, dim=dim, ffn=ffn,
                       batch=batch, length=length)
    jax.block_until_ready(step(*args))  # compile + warm-up
    cells.append(dict(variant=label, step=step, args=args, times=[]))
  for _ in range(repeats):
    for cell in cells:
      start = time.perf_counter()
      jax.block_until_ready(cell["step"](*cell["args"]))
      cell["times"].append(time.perf_counter() - start)
  ref = statistics.median(cells[0]["times"])
  return [dict(variant=c["variant"], ms=1e3 * statistics.median(c["times"]),
               ratio=statistics.median(c["times"]) / ref) for c in cells]


def markdown(rows) -> str:
  lines = ["| layer | fwd+bwd (ms) | / dense same active params |", "|---|---:|---:|"]
  lines += [f"| {r['variant']} | {r['ms']:.1f} | {r['ratio']:.2f}x |" for r in rows]
  return "\n".join(lines)
