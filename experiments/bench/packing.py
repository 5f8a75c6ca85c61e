"""Packing benchmark: padding before and after packing, and packing speed, on real corpora.

    python -m experiments.bench --config configs/bench/packing.py --workdir runs/bench/packing

For every example set of the configured corpora (`CORPORA`) and every packing method
(experiments/data/packing.py, lengths sorted decreasing, at most `max_segments` examples per
row): the padding fraction with one example per row (each padded to the row length) and after
packing, the packed rows, examples per row, and the packing speed in examples/s (the methods
timed with experiments/bench/measure.py's interleaved timer, median [min-max]). Corpora:

- `stdlib`: the default MLM corpus (the standard library's `.py` files, train split), each file
  cut into pieces of at most `row_length - 1` tokens plus a CLS each, as configs/mlm.py does, per
  tokenizer (bytes; WordPiece trained on the same files) and row length;
- `listops`, `listops_short`: generated ListOps (LRA's 500-2,000 tokens, depth 10; the 32-128
  tokens of configs/baselines/lra_listops.py and packing.py), one row = the longest example;
- `docstrings`: GLUE-like single sentences, the standard library's docstrings (the retrieval
  queries) with MiniLM's WordPiece tokenizer and [CLS]/[SEP], padded to 128 as BERT fine-tuning
  does (skipped with a note when the checkpoint package is missing).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from encoders.errors import ConfigError
from experiments.bench import measure, report
from experiments.data import packing


class Unavailable(Exception):
  """A corpus that cannot be built here (an optional package is missing); skipped."""


FIELDS = ("corpus", "row_length", "examples", "method", "status", "padding_before", "rows",
          "padding_after", "examples_per_row", "time_ms", "time_min_ms", "time_max_ms", "repeats",
          "examples_per_s", "note")


def stdlib_sets(config: ml_collections.ConfigDict) -> list[tuple[str, list, int]]:
  from experiments.data import text_corpus  # pylint: disable=import-outside-toplevel
  from experiments.data import tokenizers as toks  # pylint: disable=import-outside-toplevel
  options = config.stdlib
  texts = text_corpus.read_documents(None, max_bytes=options.max_bytes,
                                     eval_fraction=options.eval_fraction)
  sets = []
  for kind in options.tokenizers:
    tok = toks.make_tokenizer(kind, vocab_size=options.vocab_size, train_texts=texts["train"],
                              cache_dir=config.cache_dir,
                              corpus_key=text_corpus.corpus_key(texts))
    docs = [tok.encode(t) for t in texts["train"]]
    for row_length in options.row_lengths:
      pieces = packing.split_documents(docs, row_length - 1)
      sets.append((f"stdlib .py, {kind}", [np.concatenate([[toks.CLS_ID], p]) for p in pieces],
                   row_length))
  return sets


def listops_sets(config: ml_collections.ConfigDict, name: str) -> list[tuple[str, list, int]]:
  from experiments.data import listops  # pylint: disable=import-outside-toplevel
  options = config[name]
  data = listops.load_listops("train", num_train=options.num_train, num_eval=options.num_eval,
                              seed=0, min_length=options.min_length,
                              max_length=options.max_length, max_depth=options.max_depth,
                              max_args=10, cache_dir=config.cache_dir)
  return [(options.label, packing.unpadded_examples(data["inputs"]), data["inputs"].shape[1])]


def docstring_sets(config: ml_collections.ConfigDict) -> list[tuple[str, list, int]]:
  from experiments import pretrained  # pylint: disable=import-outside-toplevel
  from experiments.data import retrieval  # pylint: disable=import-outside-toplevel
  options = config.docstrings
  try:
    checkpoint = pretrained.resolve(options.checkpoint)
  except ConfigError as error:  # its optional package is not installed
    raise Unavailable(str(error)) from error
  tokenizer = pretrained.load_tokenizer(checkpoint, options.row_length)
  pairs = retrieval.load_pairs(max_train=options.max_pairs, max_eval=options.max_pairs)
  queries = [q for split in ("train", "eval") for q, _ in pairs[split]]
  sentences = [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(queries)]
  return [("stdlib docstrings, WordPiece (GLUE-like)", sentences, options.row_length)]


CORPORA = {"stdlib": stdlib_sets, "listops": lambda c: listops_sets(c, "listops"),
           "listops_short": lambda c: listops_sets(c, "listops_short"),
           "docstrings": docstring_sets}


def measure_set(config: ml_collections.ConfigDict, corpus: str, examples: list,
                row_length: int) -> list[dict]:
  """One row per method: padding before/after, rows, and the packing speed."""
  rows = []
  for method in config.methods:
    row = {"corpus": corpus, "row_length": row_length, "examples": len(examples),
           "method": method}

    def call(method=method):
      return packing.pack(examples, row_length, method=method, max_segments=config.max_segments)

    packed = call()
    row.update(padding_before=packed.padding_before, rows=len(packed.inputs),
               padding_after=packed.padding_after,
               examples_per_row=len(examples) / len(packed.inputs), call=call)
    rows.append(row)
  measure.time_interleaved(rows, config.repeats, config.max_seconds)
  for row in rows:
    if row.get("status") == "ok":
      row["examples_per_s"] = len(examples) / (row["time_ms"] / 1e3)
  return rows


def markdown(rows: list[dict], config: ml_collections.ConfigDict, skipped: list[str]) -> str:
  methods = list(config.methods)
  lines = [f"{report.device_line()}; at most {config.max_segments} examples per row, lengths "
           f"sorted decreasing. Packing time: {report.timing(config.repeats)}.",
           "", "| corpus | row length | examples | padding before | "
           + " | ".join(f"{m} rows / padding" for m in methods) + " | "
           + " | ".join(f"{m} examples/s" for m in methods) + " |",
           "|---|---:|---:|---:|" + "---:|" * 2 * len(methods)]
  by_set = {}
  for r in rows:
    by_set.setdefault((r["corpus"], r["row_length"]), {})[r["method"]] = r
  for (corpus, row_length), cells in by_set.items():
    first = next(iter(cells.values()))
    lines.append(f"| {corpus} | {row_length} | {first['examples']} | "
                 f"{first['padding_before']:.3f} | "
                 + " | ".join(f"{cells[m]['rows']} / {cells[m]['padding_after']:.3f}"
                              for m in methods) + " | "
                 + " | ".join(f"{cells[m]['examples_per_s']:.0f}" if "examples_per_s" in cells[m]
                              else cells[m].get("status", "–") for m in methods) + " |")
  notes = [f"- {name} skipped: {reason}" for name, reason in skipped]
  return "\n".join(lines + ([""] + notes if notes else []))


def check_config(config: ml_collections.ConfigDict) -> None:
  measure.check_positive(config, ("repeats", "max_segments"))
  unknown = [c for c in config.corpora if c not in CORPORA]
  if unknown:
    raise ConfigError(f"corpora: {unknown[0]!r} is not a corpus; allowed: {', '.join(CORPORA)}")
  bad = [m for m in config.methods if m not in packing.METHODS]
  if bad or not config.methods:
    raise ConfigError(f"methods={tuple(config.methods)!r}; allowed: "
                      f"{', '.join(packing.METHODS)}")


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Every corpus's example sets x methods; writes results.csv and results.md."""
  check_config(config)
  rows, skipped = [], []
  for name in config.corpora:
    try:
      sets = CORPORA[name](config)
    except Unavailable as error:
      print(f"note: corpus {name!r} skipped: {error}", flush=True)
      skipped.append((name, str(error)))
      continue
    for corpus, examples, row_length in sets:
      for row in measure_set(config, corpus, examples, row_length):
        rows.append(row)
        speed = (f"{row['examples_per_s']:.0f} examples/s" if "examples_per_s" in row
                 else f"{row['status']}: {row['note']}")
        print(f"{corpus:>42} @ {row_length:>5} {row['method']:>9}: padding "
              f"{row['padding_before']:.3f} -> {row['padding_after']:.3f}, {speed}", flush=True)
      report.write_results(workdir, rows, FIELDS, markdown(rows, config, skipped))  # as it goes
  report.write_results(workdir, rows, FIELDS, markdown(rows, config, skipped))
  return rows
