"""Zero-shot retrieval on the stdlib docstring -> source benchmark for an imported checkpoint.

    python -m experiments.evaluate_retrieval --checkpoint all-MiniLM-L6-v2
    python -m experiments.evaluate_retrieval --checkpoint /path/to/hf_dir --doc_length 256 \
        --attention local --output_dim 128

Prints MRR@10, nDCG@10 and Recall@100 of every eval query against all eval documents (the
split and caps of `configs/base.py`'s `data.retrieval`, the lengths of its `embed`), with the
checkpoint's own tokenizer and pooling. `--attention` swaps the attention variant on the
imported weights (e.g. `local`, 32-token blocks, `--window` blocks each side);
`--output_dim` keeps a Matryoshka prefix of each embedding. A trained `embed` run reports the
same metrics for its student in its own eval lines.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from experiments import pretrained
from experiments.data import retrieval

_CHECKPOINT = flags.DEFINE_string("checkpoint", "all-MiniLM-L6-v2",
                                  "HF checkpoint dir or packaged name")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 64, "query tokens (truncation)")
_DOC_LENGTH = flags.DEFINE_integer("doc_length", 128, "document tokens (truncation)")
_EVAL_FRACTION = flags.DEFINE_float("eval_fraction", 0.2, "data.retrieval.eval_fraction")
_MAX_EVAL = flags.DEFINE_integer("max_eval", 1000, "data.retrieval.max_eval")
_ATTENTION = flags.DEFINE_string("attention", "dense", "attention variant for the weights")
_WINDOW = flags.DEFINE_integer("window", 1, "local attention: blocks each side")
_OUTPUT_DIM = flags.DEFINE_integer("output_dim", 0, "Matryoshka prefix; 0 = full")
_BATCH = flags.DEFINE_integer("batch_size", 64, "encoding batch size")


def main(argv):
  del argv
  attention = {"name": _ATTENTION.value}
  if _ATTENTION.value == "local":
    attention.update(block_size=32, window=_WINDOW.value)
  ckpt = pretrained.load(_CHECKPOINT.value, attention=attention,
                         max_seq_length=_DOC_LENGTH.value)
  if _OUTPUT_DIM.value:
    head = dict(ckpt.model.spec("head"), output_dim=_OUTPUT_DIM.value)
    ckpt.model = ckpt.model.replace(head=head)
  pairs = retrieval.load_pairs(eval_fraction=_EVAL_FRACTION.value, max_train=0,
                               max_eval=_MAX_EVAL.value)["eval"]
  start = time.perf_counter()
  queries = pretrained.embed(ckpt, [q for q, _ in pairs], _BATCH.value, _QUERY_LENGTH.value)
  docs = pretrained.embed(ckpt, [d for _, d in pairs], _BATCH.value, _DOC_LENGTH.value)
  metrics = retrieval.evaluate_embeddings(queries, docs)
  print(json.dumps({"checkpoint": _CHECKPOINT.value, "pairs": len(pairs),
                    "attention": attention, "output_dim": _OUTPUT_DIM.value,
                    "query_length": _QUERY_LENGTH.value, "doc_length": _DOC_LENGTH.value,
                    "encode_seconds": round(time.perf_counter() - start, 1),
                    **{k: round(v, 4) for k, v in metrics.items()}}))


if __name__ == "__main__":
  app.run(main)
