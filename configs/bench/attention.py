"""Attention-layer benchmark: forward+backward time, peak memory and FLOPs vs sequence length.

    python -m experiments.bench --config configs/bench/attention.py --workdir runs/bench/attention
    python -m experiments.bench --config configs/bench/attention.py:quick --workdir /tmp/bench
    python -m experiments.bench --config configs/bench/attention.py --workdir runs/bench/bf16 \
        --config.lengths='(1024, 4096)' --config.dtype=bfloat16

One registered attention layer (q/k/v/o projections included) of width 256 = 4 heads x 64,
batch 1, for every variant below at every length (experiments/bench/attention.py); each number
is also given as a ratio to `reference` measured at the same length in the same run. Variants
not registered (yet) are skipped with a note. Presets: `full` (1K-16K) and `quick` (128, 256;
dense and linear; seconds) and `device` (scripts/device_check.sh on a GPU, bf16, 1K-64K:
dense on `xla` and `cudnn`, local/bigbird/longformer on `xla` and `pallas_gpu`, ratios to
cuDNN dense), `tpu` (scripts/device_check.sh on a TPU, bf16, 1K-16K: dense, local, bigbird and
longformer on `xla` and `splash`, ratios to XLA dense), `mixers` (the token mixers of
encoders/mixers/ beside dense, local and Performer, 1K-16K) and `study` (a study's speed side,
`study.attention_bench`: one length, 4K, 3 rounds; the study sets the variants).

`implementations` makes the kernel a grid axis: a variant listed there runs once per
implementation, labelled `variant/implementation` (others run with their default, `auto`).
Besides XLA's FLOPs, every cell reports its useful FLOPs (projections plus the attention pairs
the pattern keeps, forward and backward, no recomputation), the TFLOP/s they make and their
share of the same-run matmul ceiling (`ceiling_size`).
"""

from configs.bench import check_preset, measurement

# Every attention variant the bench knows; names not in the registry are skipped.
VARIANTS = ("dense", "linear", "performer", "linformer", "nystrom",
            "local", "block", "strided", "bigbird", "longformer",
            "fnet", "s4d", "s5", "mamba", "hyena")


def get_config(preset: str = "full"):
  check_preset(preset, ("full", "quick", "device", "tpu", "mixers", "study"))
  config = measurement("attention", repeats=5, max_seconds=120.0)  # per length, all variants
  config.variants = VARIANTS  # attention names to run (the reference is always run first)
  # name -> implementations to run it on (encoders/attention/implementation.py); labels then
  # read `name/implementation`. Unlisted names run once, on their default (auto).
  config.implementations = {}
  config.reference = "dense"  # a label: ratios are value / its value at the same length
  config.lengths = (1024, 2048, 4096, 8192, 16384)  # sequence lengths
  config.batch_size = 1
  config.num_heads = 4
  config.head_dim = 64  # model width = num_heads * head_dim
  config.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
  config.ceiling_size = 2048  # the matmul ceiling: [n, n] x [n, n] in `dtype`
  config.ceiling_seconds = 1.0
  # Per-variant options, merged into `model.attention` (defaults of each variant otherwise).
  # Block-sparse: 64-token blocks; local/longformer windows of 4 blocks (256 tokens) each side.
  config.options = dict(performer=dict(num_features=256), linformer=dict(k=256),
                        nystrom=dict(num_landmarks=64), local=dict(block_size=64, window=4),
                        longformer=dict(block_size=64, window=4), bigbird=dict(block_size=64),
                        block=dict(block_size=128), strided=dict(block_size=64))
  if preset == "device":  # one H200 in < 4 minutes (scripts/device_check.sh)
    config.variants = ("dense", "local", "bigbird", "longformer")
    config.implementations = dict(dense=("xla", "cudnn"), local=("xla", "pallas_gpu"),
                                  bigbird=("xla", "pallas_gpu"),
                                  longformer=("xla", "pallas_gpu"))
    config.reference = "dense/cudnn"
    config.lengths = (1024, 4096, 16384, 65536)
    config.dtype = "bfloat16"
    config.repeats, config.max_seconds = 5, 10.0
    config.ceiling_size = 8192
    # Local: a token-level window of +-256 (the kernel targets of docs/benchmarks.md), 64-token
    # blocks.
    window = dict(block_size=64, window_tokens=256)
    config.options = dict(local=window, longformer=window, bigbird=dict(block_size=64))
  if preset == "tpu":  # one TPU chip in < 3 minutes (scripts/device_check.sh)
    config.variants = ("dense", "local", "bigbird", "longformer")
    config.implementations = {name: ("xla", "splash") for name in config.variants}
    config.reference = "dense/xla"
    # Up to 16K: splash builds its block masks on the host, minutes per layout at 64K.
    config.lengths = (1024, 4096, 16384)
    config.dtype = "bfloat16"
    config.repeats, config.max_seconds = 5, 10.0
    config.ceiling_size = 8192
    window = dict(block_size=128, window_tokens=256)  # Mosaic's blocks: multiples of 128
    config.options = dict(local=window, longformer=window, bigbird=dict(block_size=128))
  if preset == "mixers":  # where each token mixer wins against attention (docs/benchmarks.md)
    config.variants = ("dense", "local", "performer", "fnet", "s4d", "s5", "mamba", "hyena")
  if preset == "study":  # experiments/study.py: the variants and options come from the cells
    config.lengths, config.repeats = (4096,), 3
  if preset == "quick":
    config.variants = ("dense", "linear")
    config.lengths = (128, 256)
    config.repeats = 2
    config.ceiling_size, config.ceiling_seconds = 256, 0.1
  return config
