"""Full MLM train steps: time, tokens/s, memory, FLOPs and MFU per (variant, length).

    python -m experiments.bench --config configs/bench/train_step.py --workdir runs/bench/train_step

A cell is the runner's real train step (experiments/bench/synthetic.py: `make_train_step`,
AdamW, clipping) of an MLM encoder on a synthetic batch with exactly round(mask_rate * length)
masked positions per row; a variant overrides model fields and may compute full-vocabulary
logits at every position (`predict="all"`, the work of BertForMaskedLM) instead of only at the
masked positions (our default). The variants of one length are compiled, then timed
interleaved (experiments/bench/measure.py). Per cell: step time median [min-max], process CPU
time, tokens/s, XLA's FLOPs and compiled peak memory, the process's peak RSS, and MFU = FLOPs /
time / the ceiling, the FLOP/s of one large matmul measured in the same run (for bfloat16 rows,
bf16 operands with float32 accumulation). Ratios are to `reference` at the same length.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections

from encoders.errors import ConfigError
from experiments.bench import measure, report, synthetic

FIELDS = ("variant", "length", "predict", "dtype", "status", "params", "compile_s",
          "estimated_ms", "model_gflops", "time_ms",
          "time_min_ms", "time_max_ms", "repeats", "cpu_ms", "tokens_per_s", "gflops",
          "gflops_per_s", "ceiling_gflops_per_s", "mfu", "memory_mib", "rss_mib", "time_ratio",
          "tokens_per_s_ratio", "gflops_ratio", "mfu_ratio", "memory_ratio", "rss_ratio", "note")
RATIOS = ("time_ms", "tokens_per_s", "gflops", "mfu", "memory_mib", "rss_mib")
PLOT = report.Plot("train_step.png", "length", (
    ("tokens_per_s", "train tokens/s", True), ("memory_mib", "XLA peak memory (MiB)", True),
    ("mfu", "MFU (of the matmul ceiling)", False)))


def model_dict(config: ml_collections.ConfigDict, length: int, overrides: Mapping) -> dict:
  """The bench's model sub-dict at `length`, with a variant's `model` overrides merged in."""
  model = dict(vocab_size=config.vocab_size, max_length=length, dim=config.dim,
               num_layers=config.num_layers, num_heads=config.num_heads,
               mlp_dim=config.mlp_dim, dropout_rate=config.dropout_rate, dtype=config.dtype,
               scan_layers=config.scan_layers, head=dict(name="mlm"))
  for key, value in overrides.items():
    model[key] = ({**model[key], **value} if isinstance(model.get(key), dict) else value)
  return model


def mlm_cell(config: ml_collections.ConfigDict, length: int, overrides: Mapping,
             predict: str) -> tuple:
  """(train step, (state, batch), parameter count) of the runner's MLM step at `length`."""
  task = synthetic.SyntheticMLM(config, config.vocab_size,
                                max(1, round(config.mask_rate * length)), predict)
  return synthetic.runner_step(config, model_dict(config, length, overrides), task, length)


def variant_specs(config: ml_collections.ConfigDict) -> list[tuple[str, dict, str]]:
  """(label, model overrides, predict) of every variant; bad entries are a ConfigError."""
  specs = []
  for entry in config.variants:
    if len(entry) != 2 or not isinstance(entry[0], str):
      raise ConfigError(f"variants entry {entry!r} must be (label, dict(model=..., predict=...))")
    label, spec = entry[0], dict(entry[1])
    unknown = sorted(set(spec) - {"model", "predict"})
    if unknown:
      raise ConfigError(f"variants[{label!r}].{unknown[0]}: allowed keys: model, predict")
    predict = spec.get("predict", "masked")
    if predict not in synthetic.PREDICT:
      raise ConfigError(f"variants[{label!r}].predict={predict!r}; allowed: "
                        f"{', '.join(synthetic.PREDICT)}")
    specs.append((label, dict(spec.get("model", {})), predict))
  return specs


def measure_length(config: ml_collections.ConfigDict, length: int, specs, ceilings: dict,
                   limit_bytes: float) -> list[dict]:
  """Compiles every variant at `length`, then times them interleaved; one row each."""
  rows = []
  for label, overrides, predict in specs:
    dtype = overrides.get("dtype", config.dtype)
    row = {"variant": label, "length": length, "predict": predict, "dtype": dtype,
           "ceiling_gflops_per_s": ceilings[dtype] / 1e9}
    try:
      fn, args, row["params"] = mlm_cell(config, length, overrides, predict)
      row.update(measure.compile_cell(fn, args, limit_bytes, donate_state=True))
    except Exception as error:  # pylint: disable=broad-except
      row.update(measure.error_row(error))
    rows.append(row)
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  for row in rows:
    if row.get("status") == "ok":
      row.update(measure.throughput(row, config.batch_size * length, row["gflops"],
                                   ceilings[row["dtype"]]))
  return rows


def markdown(rows: list[dict], config: ml_collections.ConfigDict, ceilings: dict) -> str:
  ceiling = ", ".join(f"{dtype} {value / 1e9:.0f} GFLOP/s" for dtype, value in ceilings.items())
  lines = [
      f"{report.device_line()}; MLM train step (forward, backward, AdamW) of width {config.dim}, "
      f"{config.num_layers} layers, {config.num_heads} heads, FFN {config.mlp_dim}, vocabulary "
      f"{config.vocab_size}, batch {config.batch_size}, {config.mask_rate:.0%} of positions "
      f"predicted. Time: {report.timing(config.repeats)}. Peak memory: "
      f"{measure.PEAK_MEMORY}; and the process's peak RSS during the timed calls. Cores busy: "
      "process CPU time / wall time per call. MFU: XLA FLOPs / time / the same-run matmul "
      f"ceiling ({ceiling}). Roofline est.: on a GPU/TPU of known peak figures, "
      "max(FLOPs / peak, bytes / bandwidth) of our count of the step (every layer and kernel), "
      "an estimate beside the measured time. "
      f"Each value (x {config.reference} at the same length, same run).",
      "",
      "| variant | length | predict | dtype | step ms [min-max] | roofline est. ms | cores busy "
      "| tokens/s | GFLOP/step | MFU | XLA peak MiB | peak RSS MiB |",
      "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r.get("time_ms") is None:
      time_text, cores = r["status"], "–"
    else:
      time_text = (f"{report.with_ratio(r, 'time_ms')} [{report.number(r['time_min_ms'])}-"
                   f"{report.number(r['time_max_ms'])}]")
      cores = f"{r['cpu_ms'] / r['time_ms']:.2f}"
    mfu = (f"{100 * r['mfu']:.1f}%" + (f" ({r['mfu_ratio']:.3g}x)" if "mfu_ratio" in r else "")
           if r.get("mfu") is not None else "–")
    estimate = f"{r['estimated_ms']:.3g}" if r.get("estimated_ms") else "–"
    lines.append(f"| {r['variant']} | {r['length']} | {r['predict']} | {r['dtype']} | "
                 f"{time_text} | {estimate} | {cores} | "
                 f"{report.with_ratio(r, 'tokens_per_s', '.0f')} | "
                 f"{report.with_ratio(r, 'gflops')} | {mfu} | "
                 f"{report.with_ratio(r, 'memory_mib', '.0f')} | "
                 f"{report.with_ratio(r, 'rss_mib', '.0f')} |")
  notes = report.notes(rows, "variant", "length")
  return "\n".join(lines + ([""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> list[tuple[str, dict, str]]:
  measure.check_positive(config, ("lengths", "repeats", "batch_size", "num_heads", "num_layers",
                                 "dim", "mlp_dim", "vocab_size", "ceiling_size"))
  specs = variant_specs(config)
  measure.check_reference(config.reference, [label for label, _, _ in specs])
  return specs


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every (length, variant) train step; writes results.csv, results.md, train_step.png."""
  specs = check_config(config)
  ceilings = measure.measure_ceilings(
      config, [config.dtype] + [o.get("dtype", config.dtype) for _, o, _ in specs])
  limit = measure.memory_limit(config)
  rows = []
  for index, length in enumerate(config.lengths, 1):
    for row in measure_length(config, length, specs, ceilings, limit):
      rows.append(row)
      shown = (f"{row['time_ms']:.1f} ms, {row['tokens_per_s']:.0f} tokens/s, MFU "
               f"{100 * row['mfu']:.1f}%" if "time_ms" in row else row["status"])
      print(f"{row['variant']:>24} @ {length:>5}: {shown}"
            + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)
    report.add_ratios(rows, config.reference, RATIOS)
    report.write_results(workdir, rows, FIELDS, markdown(rows, config, ceilings),
                         PLOT if index == len(config.lengths) else None)  # as it goes
  return rows
