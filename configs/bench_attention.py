"""Attention-layer benchmark: forward+backward time, peak memory and FLOPs vs sequence length.

    python -m experiments.bench --config configs/bench_attention.py --workdir runs/bench_attention
    python -m experiments.bench --config configs/bench_attention.py:quick --workdir /tmp/bench
    python -m experiments.bench --config configs/bench_attention.py --workdir runs/bench_bf16 \
        --config.lengths='(1024, 4096)' --config.dtype=bfloat16

One registered attention layer (q/k/v/o projections included) of width 256 = 4 heads x 64,
batch 1, for every variant below at every length; each number is also given as a ratio to
`reference` measured at the same length in the same run. Variants not registered (yet) are
skipped with a note. Presets: `full` (1K-16K) and `quick` (128, 256; dense and linear; tests).
"""

import ml_collections

# Every attention variant the bench knows; names not in the registry are skipped.
VARIANTS = ("dense", "linear", "performer", "linformer", "nystrom",
            "local", "block", "strided", "bigbird", "longformer")


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
  if preset not in ("full", "quick"):
    raise ValueError(f"config preset {preset!r}; allowed: full, quick")
  config = ml_collections.ConfigDict()
  config.variants = VARIANTS  # attention names to run (the reference is always run first)
  config.reference = "dense"  # ratios are value / this variant's value at the same length
  config.lengths = (1024, 2048, 4096, 8192, 16384)  # sequence lengths
  config.batch_size = 1
  config.num_heads = 4
  config.head_dim = 64  # model width = num_heads * head_dim
  config.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
  # Per-variant options, merged into `model.attention` (defaults of each variant otherwise).
  # Block-sparse: 64-token blocks; local/longformer windows of 4 blocks (256 tokens) each side.
  config.options = dict(performer=dict(num_features=256), linformer=dict(k=256),
                        nystrom=dict(num_landmarks=64), local=dict(block_size=64, window=4),
                        longformer=dict(block_size=64, window=4), bigbird=dict(block_size=64),
                        block=dict(block_size=128), strided=dict(block_size=64))
  config.repeats = 5  # timed runs per cell after one warm-up run; the median is reported
  config.max_seconds = 20.0  # fewer repeats (at least 1) when they would take longer per cell
  # Cells whose compiled peak exceeds this are recorded as out of memory, not run; 0 = half the
  # free memory (XLA's CPU runtime used up to 1.8x the compiled peak).
  config.memory_limit_gb = 0.0
  config.seed = 0  # inputs and parameters
  if preset == "quick":
    config.variants = ("dense", "linear")
    config.lengths = (128, 256)
    config.repeats = 2
  return config
