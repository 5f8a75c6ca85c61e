"""Peer comparison: our MLM train step against Hugging Face's BERT in PyTorch and in Flax.

    python -m experiments.bench --config configs/bench/peers.py --workdir runs/bench/peers

One BERT-shaped MLM model (Devlin et al. 2019: post-norm, embedding norm, token-type
embeddings, exact GELU, tied decoder) trained with clipped AdamW, four ways, in one process:

- `ours`: the runner's train step (experiments/bench/synthetic.py's synthetic MLM task), MLM
  head on the masked positions only (our default);
- `ours, same work`: the same step with full-vocabulary logits at every position;
- `pytorch`: `transformers.BertForMaskedLM` with `attn_implementation="sdpa"` (fused
  scaled-dot-product attention), `torch.optim.AdamW` and `clip_grad_norm_`, with as many torch
  threads as XLA:CPU uses cores;
- `flax`: `transformers.FlaxBertForMaskedLM`, jitted with optax's AdamW.

The peers compute logits at every position (as BertForMaskedLM does); every row's loss is the
mean cross-entropy over the same P = round(mask_rate * length) masked positions per row.
Dropout is 0 everywhere. All rows are timed with the interleaved timer (experiments/bench/
measure.py). Per row: step time (median, min-max), tokens/s, the process's peak RSS during its
calls, and for the XLA-compiled rows XLA's FLOPs and compiled peak; MFU divides the FLOPs of
the work done (our same-work step's count for the full-logit rows) by the time and the same-run
f32 matmul ceiling. Ratios are to `reference` (pytorch). A peer whose packages are missing is
skipped with a message naming the extra to install (`pip install -e '.[peers]'`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from encoders.errors import ConfigError
from experiments.bench import measure, report, synthetic, train_step

PEERS = ("pytorch", "flax")
INSTALL = "pip install -e '.[peers]'  (torch, transformers 4.x with its Flax classes)"
FIELDS = ("row", "work", "status", "params", "time_ms", "time_min_ms", "time_max_ms", "repeats",
          "cpu_ms", "tokens_per_s", "tokens_per_s_ratio", "gflops", "mfu", "memory_mib", "rss_mib",
          "note")
BERT_MODEL = dict(norm_position="post", embed_norm=True, type_vocab_size=2)


def missing(peer: str) -> str | None:
  """Why `peer` cannot run here (a missing package, or transformers 5+ for Flax), or None."""
  needed = ("torch", "transformers") if peer == "pytorch" else ("transformers",)
  absent = [name for name in needed if importlib.util.find_spec(name) is None]
  if absent:
    return f"{', '.join(absent)} not installed; {INSTALL}"
  version = importlib.metadata.version("transformers")
  if peer == "flax" and int(version.split(".")[0]) >= 5:
    return f"transformers {version} has no Flax classes; {INSTALL}"
  return None


def bert_config(config: ml_collections.ConfigDict):
  import transformers  # pylint: disable=import-outside-toplevel
  return transformers.BertConfig(
      vocab_size=config.vocab_size, hidden_size=config.dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, intermediate_size=config.mlp_dim,
      max_position_embeddings=config.length, hidden_act="gelu", hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0, type_vocab_size=2, layer_norm_eps=1e-6,
      attn_implementation="sdpa")


def masked_batch(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """(corrupted tokens, labels with -100 outside the masked positions), as the peers take."""
  task = synthetic.SyntheticMLM(config, config.vocab_size,
                                max(1, round(config.mask_rate * config.length)), "all")
  batch = task.batch(config.batch_size, config.length, config.seed)
  inputs, targets = task.prepare(batch, jax.random.PRNGKey(1), train=True)
  labels = np.where(np.asarray(targets["weights"]) > 0, np.asarray(targets["labels"]), -100)
  return np.asarray(inputs["tokens"]), labels


def pytorch_cell(config: ml_collections.ConfigDict) -> dict:
  """BertForMaskedLM (SDPA) + AdamW: a `call` (one step) and its parameter count."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(measure.cpu_threads())
  torch.manual_seed(config.seed)
  model = transformers.BertForMaskedLM(bert_config(config)).train()
  implementation = model.config._attn_implementation  # pylint: disable=protected-access
  if implementation != "sdpa":
    raise RuntimeError(f"BertForMaskedLM runs {implementation!r} attention, not sdpa")
  optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, eps=1e-6,
                                weight_decay=0.01)
  tokens, labels = (torch.tensor(a, dtype=torch.long) for a in masked_batch(config))
  attention_mask = torch.ones_like(tokens)

  def call():
    loss = model(input_ids=tokens, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

  return {"call": call, "params": sum(p.numel() for p in model.parameters()),
          "note": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                  f"{torch.get_num_threads()} threads, attention {implementation}"}


def flax_cell(config: ml_collections.ConfigDict, limit_bytes: float) -> dict:
  """FlaxBertForMaskedLM + optax AdamW, jitted: a `call`, params, XLA's figures."""
  import transformers  # pylint: disable=import-outside-toplevel
  model = transformers.FlaxBertForMaskedLM(bert_config(config), seed=config.seed,
                                           dtype=jnp.float32)
  optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                          optax.adamw(config.learning_rate, eps=1e-6, weight_decay=0.01))
  tokens, labels = (jnp.asarray(a) for a in masked_batch(config))

  def step(state, tokens, labels):
    params, opt_state = state

    def loss_fn(params):
      logits = model(tokens, attention_mask=jnp.ones_like(tokens), params=params,
                     train=False).logits
      weights = (labels >= 0).astype(jnp.float32)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
      return (losses * weights).sum() / weights.sum()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  state = (model.params, optimizer.init(model.params))
  return {**measure.compile_cell(step, (state, tokens, labels), limit_bytes, donate_state=True),
          "params": sum(x.size for x in jax.tree.leaves(model.params)),
          "note": f"transformers {transformers.__version__}"}


def ours_cell(config: ml_collections.ConfigDict, predict: str, limit_bytes: float) -> dict:
  fn, args, params = train_step.mlm_cell(config, config.length, BERT_MODEL, predict)
  return {**measure.compile_cell(fn, args, limit_bytes, donate_state=True), "params": params}


def build_rows(config: ml_collections.ConfigDict, limit_bytes: float) -> list[dict]:
  """Every row with its `call` (or a skipped / error / oom status)."""
  builders = [("ours", "masked positions", lambda: ours_cell(config, "masked", limit_bytes)),
              ("ours, same work", "all positions", lambda: ours_cell(config, "all", limit_bytes))]
  builders += [("pytorch (BertForMaskedLM, sdpa)", "all positions",
                lambda: pytorch_cell(config))] if "pytorch" in config.peers else []
  builders += [("flax (FlaxBertForMaskedLM)", "all positions",
                lambda: flax_cell(config, limit_bytes))] if "flax" in config.peers else []
  rows = []
  for (label, work, build), peer in zip(builders, ("ours", "ours", *config.peers)):
    row = {"row": label, "work": work}
    reason = missing(peer) if peer in PEERS else None
    if reason:
      print(f"note: peer {peer!r} skipped: {reason}", flush=True)
      rows.append({**row, "status": "skipped", "note": reason})
      continue
    try:
      rows.append({**row, **build()})
    except Exception as error:  # pylint: disable=broad-except
      rows.append({**row, **measure.error_row(error)})
  return rows


def add_throughput(rows: list[dict], config: ml_collections.ConfigDict, ceiling: float) -> None:
  """tokens/s and MFU (full-logit rows: our same-work step's FLOPs); ratios to the reference."""
  same_work = next((r["gflops"] for r in rows if r["row"] == "ours, same work" and "gflops" in r),
                   float("nan"))
  for r in rows:
    if r.get("status") == "ok":
      work = r["gflops"] if r["work"] == "masked positions" else same_work
      r.update(measure.throughput(r, config.batch_size * config.length, work, ceiling))
  ref = next((r for r in rows if r["row"].startswith(config.reference) and "tokens_per_s" in r),
             None)
  for r in rows:
    if ref is not None and "tokens_per_s" in r:
      r["tokens_per_s_ratio"] = r["tokens_per_s"] / ref["tokens_per_s"]


def markdown(rows: list[dict], config: ml_collections.ConfigDict, ceiling: float) -> str:
  lines = [
      f"{report.device_line()}; BERT MLM (hidden {config.dim}, {config.num_layers} layers, "
      f"{config.num_heads} heads, FFN {config.mlp_dim}, vocabulary {config.vocab_size}), length "
      f"{config.length}, batch {config.batch_size}, float32, clipped AdamW, "
      f"{round(config.mask_rate * config.length)} masked positions per row. Time: "
      f"{report.timing(config.repeats)}; ratios to {config.reference}. Cores "
      "busy: process CPU time / wall time per step. Peak memory: "
      f"{measure.PEAK_MEMORY}; peak RSS: the whole process (all rows live in it) during the row's "
      "steps. MFU: FLOPs of the work done / time / the same-run f32 matmul ceiling "
      f"({ceiling / 1e9:.0f} GFLOP/s).", "",
      "| row | logits at | params | step ms [min-max] | cores busy | tokens/s | vs "
      + config.reference + " | MFU | XLA peak MiB | peak RSS MiB |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if r.get("status") != "ok":
      lines.append(f"| {r['row']} | {r['work']} | {r.get('params', '–')} | {r['status']} "
                   "| – | – | – | – | – | – |")
      continue
    lines.append(
        f"| {r['row']} | {r['work']} | {r['params']:,} | {r['time_ms']:.0f} "
        f"[{r['time_min_ms']:.0f}-{r['time_max_ms']:.0f}] | {r['cpu_ms'] / r['time_ms']:.2f} | "
        f"{r['tokens_per_s']:.0f} | "
        + (f"{r['tokens_per_s_ratio']:.2f}x" if "tokens_per_s_ratio" in r else "–")
        + f" | {100 * r['mfu']:.1f}% | "
        + (f"{r['memory_mib']:.0f}" if "memory_mib" in r else "–")
        + f" | {r['rss_mib']:.0f} |")
  notes = report.notes(rows, "row")
  return "\n".join(lines + ([""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> None:
  measure.check_positive(config, ("length", "batch_size", "dim", "num_layers", "num_heads",
                                 "mlp_dim", "vocab_size", "repeats", "ceiling_size"))
  unknown = [p for p in config.peers if p not in PEERS]
  if unknown:
    raise ConfigError(f"peers={tuple(config.peers)!r}: {unknown[0]!r} is not a peer; allowed: "
                      f"{', '.join(PEERS)}")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Builds, times and reports every row; writes results.csv and results.md."""
  check_config(config)
  config = ml_collections.ConfigDict(config.to_dict())  # + train_step.mlm_cell's fields
  config.update(dropout_rate=0.0, dtype="float32", scan_layers=False)
  ceiling = measure.measure_ceilings(config, ["float32"])["float32"]
  rows = build_rows(config, measure.memory_limit(config))
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  add_throughput(rows, config, ceiling)
  for r in rows:
    shown = (f"{r['time_ms']:.0f} ms, {r['tokens_per_s']:.0f} tokens/s"
             if r.get("status") == "ok" else f"{r['status']}: {r.get('note', '')}")
    print(f"{r['row']:>32}: {shown}", flush=True)
  report.write_results(workdir, rows, FIELDS, markdown(rows, config, ceiling))
  return rows
