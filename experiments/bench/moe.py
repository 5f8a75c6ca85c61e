"""MoE layer benchmark: forward + backward of one MoE FFN vs a dense FFN with the same active
parameters, measured in the same run.

    python -m experiments.bench --config configs/bench/moe.py --workdir runs/bench/moe

A variant is an FFN spec (`model.ffn`): `name="mlp"` is the dense FFN of width top_k * ffn_dim
(the same parameters per token and matmul FLOPs as the MoE's active experts); `name="moe"`
variants get `num_experts` and `top_k` from the config and expert width `ffn_dim`. Each cell:
jit(value_and_grad) of sum(y * g) for a fixed random g w.r.t. params and input, compiled and
timed by experiments/bench/measure.py (XLA's FLOPs and peak memory; interleaved rounds, median
[min-max]); ratios to `reference` (the dense FFN). A `megablox` variant off TPU is a `skipped`
row unless `interpret` (then it runs in Pallas interpret mode: correct, but no TPU speed).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from encoders.config import ModelConfig
from experiments.bench import measure, report

FIELDS = ("variant", "status", "time_ms", "time_min_ms", "time_max_ms", "repeats", "memory_mib",
          "gflops", "compile_s", "time_ratio", "memory_ratio", "gflops_ratio", "note")
RATIOS = ("time_ms", "memory_mib", "gflops")


def ffn_cell(config: ml_collections.ConfigDict, spec: Mapping) -> tuple:
  """(fwd+bwd function, its arguments) of one FFN layer."""
  spec = dict(spec)
  if spec.get("name") == "moe":
    spec.update(num_experts=config.num_experts, top_k=config.top_k, interpret=config.interpret)
    mlp_dim = config.ffn_dim
  else:
    mlp_dim = config.top_k * config.ffn_dim
  model = ModelConfig.from_dict(dict(vocab_size=32, dim=config.dim, num_layers=1, num_heads=4,
                                     mlp_dim=mlp_dim, dropout_rate=0.0, ffn=spec))
  layer = model.build("ffn")
  rng = jax.random.PRNGKey(config.seed)
  x = jax.random.normal(rng, (config.batch_size, config.length, config.dim), jnp.float32)
  g = jax.random.normal(jax.random.fold_in(rng, 1), x.shape, jnp.float32)
  tokens = jax.random.randint(rng, (config.batch_size, config.length), 0, 32)
  kwargs = {"token_ids": tokens} if spec.get("name") == "moe" else {}
  params = nn.unbox(jax.jit(lambda: layer.init(rng, x, **kwargs))())

  def loss(params, x):
    y, _ = layer.apply(params, x, **kwargs)
    return jnp.sum(y * g)

  return jax.value_and_grad(loss, argnums=(0, 1)), (params, x)


def skip_reason(config: ml_collections.ConfigDict, spec: Mapping) -> str:
  """Why a variant is not measured on this backend ('' when it is)."""
  backend = jax.default_backend()
  if spec.get("grouped_matmul") == "megablox" and backend != "tpu" and not config.interpret:
    return (f"megablox is a TPU kernel; on {backend} set interpret=True to run it in Pallas "
            "interpret mode (correct, but not a TPU speed)")
  return ""


def markdown(rows: list[dict], config: ml_collections.ConfigDict) -> str:
  lines = [f"{report.device_line()}; one FFN layer, forward+backward, dim {config.dim}, "
           f"{config.batch_size * config.length} tokens ({config.batch_size} x {config.length}), "
           f"float32; MoE: {config.num_experts} experts of width {config.ffn_dim}, top-"
           f"{config.top_k}. Time: {report.timing(config.repeats)}. Peak "
           f"memory: {measure.PEAK_MEMORY}. Each value (x {config.reference}).", "",
           f"| layer | fwd+bwd ms [min-max] | / {config.reference} | XLA peak MiB | GFLOPs |",
           "|---|---:|---:|---:|---:|"]
  for r in rows:
    step = (f"{r['time_ms']:.1f} [{r['time_min_ms']:.1f}-{r['time_max_ms']:.1f}]"
            if "time_ms" in r else r["status"])
    ratio = f"{r['time_ratio']:.2f}x" if "time_ratio" in r else "–"
    lines.append(f"| {r['variant']} | {step} | {ratio} | "
                 f"{report.with_ratio(r, 'memory_mib', '.0f')} | "
                 f"{report.with_ratio(r, 'gflops')} |")
  notes = report.notes(rows, "variant")
  return "\n".join(lines + ([""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> None:
  measure.check_positive(config, ("num_experts", "top_k", "dim", "ffn_dim", "batch_size",
                                 "length", "repeats"))
  measure.check_reference(config.reference, [entry[0] for entry in config.variants])


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every variant's layer, timed interleaved; writes results.csv and results.md."""
  check_config(config)
  limit = measure.memory_limit(config)
  rows = []
  for label, spec in config.variants:
    row = {"variant": label, "length": config.length}
    if skipped := skip_reason(config, spec):
      row.update(status="skipped", note=skipped)
      rows.append(row)
      continue
    try:
      row.update(measure.compile_cell(*ffn_cell(config, spec), limit))
    except Exception as error:  # pylint: disable=broad-except
      row.update(measure.error_row(error))
    rows.append(row)
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  report.add_ratios(rows, config.reference, RATIOS)
  for r in rows:
    shown = f"{r['time_ms']:.1f} ms" if "time_ms" in r else f"{r['status']}: {r['note']}"
    print(f"{r['variant']:>48}: {shown}", flush=True)
  report.write_results(workdir, rows, FIELDS, markdown(rows, config))
  return rows
