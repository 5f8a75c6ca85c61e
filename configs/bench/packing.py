"""Packing benchmark: padding before/after packing and packing speed on every corpus.

    python -m experiments.bench --config configs/bench/packing.py --workdir runs/bench/packing
    python -m experiments.bench --config configs/bench/packing.py:quick --workdir /tmp/bench

The standard library's `.py` files (8 MB; bytes and an 8,192-piece WordPiece; rows of 128 and
512), LRA's ListOps (10k examples, 500-2,000 tokens, depth 10), short ListOps (20k, 32-128
tokens, depth 3) and the stdlib's docstrings as GLUE-like sentences (MiniLM's WordPiece, 128);
first-fit and best-fit decreasing, at most 16 examples per row (experiments/bench/packing.py).
Presets: `full` and `quick` (300 kB of stdlib bytes at 128, 2k short ListOps; seconds).
"""

from configs import base
from configs.bench import check_preset, measurement


def get_config(preset: str = "full"):
  check_preset(preset)
  config = measurement("packing", repeats=3, max_seconds=60.0)
  config.corpora = ("stdlib", "listops", "listops_short", "docstrings")
  config.methods = ("first_fit", "best_fit")
  config.max_segments = 16  # examples per packed row at most
  config.stdlib = dict(max_bytes=8_000_000, eval_fraction=0.05, tokenizers=("bytes", "wordpiece"),
                       vocab_size=8192, row_lengths=(128, 512))  # the train split is packed
  config.listops = dict(label="ListOps (LRA)", num_train=10_000, num_eval=500, min_length=500,
                        max_length=2_000, max_depth=10)
  config.listops_short = dict(label="ListOps, 32-128 tokens", num_train=20_000, num_eval=1_000,
                              min_length=32, max_length=128, max_depth=3)
  config.docstrings = dict(checkpoint="all-MiniLM-L6-v2", row_length=128, max_pairs=100_000)
  config.cache_dir = base.default_cache_dir()  # ListOps and WordPiece caches
  if preset == "quick":
    config.corpora = ("stdlib", "listops_short")
    config.stdlib.update(max_bytes=300_000, eval_fraction=0.2, tokenizers=("bytes",),
                         row_lengths=(128,))
    config.listops_short.update(num_train=2_000, num_eval=100)
    config.repeats = 1
  return config
