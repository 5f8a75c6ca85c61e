"""Attention-layer benchmark: forward+backward time, peak memory and FLOPs vs sequence length.

    python -m experiments.bench --config configs/bench/attention.py --workdir runs/bench/attention
    python -m experiments.bench --config configs/bench/attention.py:quick --workdir /tmp/bench
    python -m experiments.bench --config configs/bench/attention.py --workdir runs/bench/bf16 \
        --config.lengths='(1024, 4096)' --config.dtype=bfloat16

One registered attention layer (q/k/v/o projections included) of width 256 = 4 heads x 64,
batch 1, for every variant below at every length (experiments/bench/attention.py); each number
is also given as a ratio to `reference` measured at the same length in the same run. Variants
not registered (yet) are skipped with a note. Presets: `full` (1K-16K) and `quick` (128, 256;
dense and linear; seconds).
"""

from configs.bench import check_preset, measurement

# Every attention variant the bench knows; names not in the registry are skipped.
VARIANTS = ("dense", "linear", "performer", "linformer", "nystrom",
            "local", "block", "strided", "bigbird", "longformer")


def get_config(preset: str = "full"):
  check_preset(preset)
  config = measurement("attention", repeats=5, max_seconds=120.0)  # per length, all variants
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
  if preset == "quick":
    config.variants = ("dense", "linear")
    config.lengths = (128, 256)
    config.repeats = 2
  return config
