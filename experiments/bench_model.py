"""Cross-layer connections: parameters, train-step time and compile time vs depth.

    python -m experiments.bench_model --depths 4,12,24

For every depth and connection (encoders/connections.py) one whole model (classification head,
AdamW) is built and its train step (forward, backward, update) jitted:

- parameters: the count, and what the connection adds to the residual model of that depth;
- compile time: trace + lower + XLA compile of the train step (`jit(...).lower().compile()`),
  after one throwaway compile so that no variant pays the process's one-time costs;
- step time: after one warm-up call, `repeats` rounds that call every variant of the depth
  once each (interleaved, so load drift on a shared machine hits all of them alike), each
  waited for with `block_until_ready`; the median per variant.

Everything is also given as a ratio to `residual` (scanned blocks, the default) at the same
depth, measured in the same run; `residual (loop)` (scan_layers=False) separates the cost of
unrolling the blocks, which every connection that reads earlier outputs pays, from the cost
of the connection itself. Prints a markdown table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from encoders.config import ModelConfig
from encoders.model import Model

_DEPTHS = flags.DEFINE_list("depths", ["4", "12", "24"], "Numbers of blocks.")
_DIM = flags.DEFINE_integer("dim", 128, "Model width.")
_HEADS = flags.DEFINE_integer("heads", 4, "Attention heads.")
_MLP_DIM = flags.DEFINE_integer("mlp_dim", 512, "FFN hidden width.")
_LENGTH = flags.DEFINE_integer("length", 128, "Sequence length.")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed train steps per variant.")

# (row label, model overrides); the first is the reference.
VARIANTS = (
    ("residual", dict(connection=dict(name="residual"))),
    ("residual (loop)", dict(connection=dict(name="residual"), scan_layers=False)),
    ("denseformer", dict(connection=dict(name="denseformer"))),
    ("scalar_mix", dict(connection=dict(name="scalar_mix"))),
    ("densenet", dict(connection=dict(name="densenet"))),
    ("hyper (n=4)", dict(connection=dict(name="hyper", expansion_rate=4))),
    ("hyper (n=4, dynamic)", dict(connection=dict(name="hyper", expansion_rate=4, dynamic=True))),
)
NUM_CLASSES = 10


def train_step_cell(config: ModelConfig, batch: int, length: int):
  """(jitted AdamW train step, its arguments, parameter count) of a classification model."""
  model = Model(config)
  rng = jax.random.PRNGKey(0)
  inputs = {"tokens": jax.random.randint(rng, (batch, length), 1, config.vocab_size),
            "mask": jnp.ones((batch, length), bool)}
  labels = jax.random.randint(rng, (batch,), 0, NUM_CLASSES)
  params = nn.unbox(jax.jit(model.init)(rng, inputs)["params"])
  optimizer = optax.adamw(1e-3)

  def step(params, opt_state, inputs, labels):
    def loss(params):
      logits, _ = model.apply({"params": params}, inputs)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  num_params = sum(x.size for x in jax.tree.leaves(params))
  return jax.jit(step), (params, optimizer.init(params), inputs, labels), num_params


def benchmark(depths: Sequence[int], *, dim: int = 128, heads: int = 4, mlp_dim: int = 512,
              length: int = 128, batch: int = 8, repeats: int = 10,
              variants=VARIANTS) -> list[dict]:
  """One row per (depth, variant): params, added, compile_s, step_ms and ratios to the first."""
  def make_cell(depth: int, overrides):
    config = ModelConfig.from_dict(dict(
        vocab_size=32, max_length=length, dim=dim, num_layers=depth, num_heads=heads,
        mlp_dim=mlp_dim, dropout_rate=0.0,
        head=dict(name="classification", num_classes=NUM_CLASSES), **overrides))
    return train_step_cell(config, batch, length)

  step, args, _ = make_cell(1, variants[0][1])  # the process's first compile pays one-time costs
  jax.block_until_ready(step(*args))
  rows = []
  for depth in depths:
    cells = []
    for label, overrides in variants:
      step, args, num_params = make_cell(depth, overrides)
      start = time.perf_counter()
      compiled = step.lower(*args).compile()
      compile_s = time.perf_counter() - start
      jax.block_until_ready(compiled(*args))  # warm-up
      cells.append(dict(depth=depth, variant=label, params=num_params, compile_s=compile_s,
                        compiled=compiled, args=args, times=[]))
    for _ in range(repeats):
      for cell in cells:
        start = time.perf_counter()
        jax.block_until_ready(cell["compiled"](*cell["args"]))
        cell["times"].append(time.perf_counter() - start)
    ref = cells[0]
    ref_ms = 1e3 * statistics.median(ref["times"])
    for cell in cells:
      step_ms = 1e3 * statistics.median(cell.pop("times"))
      del cell["compiled"], cell["args"]
      added = cell["params"] - ref["params"]
      rows.append({**cell, "added": added, "added_pct": 100 * added / ref["params"],
                   "step_ms": step_ms, "step_ratio": step_ms / ref_ms,
                   "compile_ratio": cell["compile_s"] / ref["compile_s"]})
  return rows


def markdown(rows: Sequence[dict]) -> str:
  """The table, then residual's compile time at each depth relative to the first depth."""
  lines = ["| depth | connection | params | added | step (ms) | step / residual | compile (s) "
           "| compile / residual |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['depth']} | {r['variant']} | {r['params']:,} | {r['added']:,} "
                 f"({r['added_pct']:.3g}%) | {r['step_ms']:.1f} | {r['step_ratio']:.2f}x "
                 f"| {r['compile_s']:.2f} | {r['compile_ratio']:.2f}x |")
  residual = [r for r in rows if r["variant"] == rows[0]["variant"]]
  scaling = ", ".join(f"depth {r['depth']}: {r['compile_s'] / residual[0]['compile_s']:.2f}x"
                      for r in residual[1:])
  if scaling:
    lines.append(f"\n{rows[0]['variant']} compile time vs depth {residual[0]['depth']}: "
                 f"{scaling}")
  return "\n".join(lines)


def main(argv):
  del argv
  rows = benchmark([int(d) for d in _DEPTHS.value], dim=_DIM.value, heads=_HEADS.value,
                   mlp_dim=_MLP_DIM.value, length=_LENGTH.value, batch=_BATCH.value,
                   repeats=_REPEATS.value)
  print(f"{jax.devices()[0].device_kind}, dim {_DIM.value}, {_HEADS.value} heads, "
        f"MLP {_MLP_DIM.value}, length {_LENGTH.value}, batch {_BATCH.value}, "
        f"median of {_REPEATS.value} steps\n")
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
