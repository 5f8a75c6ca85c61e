"""Train-step benchmark: the full MLM train step per variant and sequence length.

    python -m experiments.bench --config configs/bench/train_step.py --workdir runs/bench/train_step
    python -m experiments.bench --config configs/bench/train_step.py:quick --workdir /tmp/bench

The runner's train step (experiments/steps.py: forward, backward, clipped AdamW update) of a
256-wide, 4-layer MLM encoder with BERT's 30,522-token vocabulary, for every variant below at
every length (experiments/bench/train_step.py): time (median, min-max), tokens/s, XLA FLOPs and
MFU against a matmul ceiling measured in the same run, XLA's compiled peak memory and the
process's peak RSS, each also as a ratio to `reference` at the same length. The variants of one
length run interleaved. Rows: our default (MLM head on the masked positions only), the same
model computing full-vocabulary logits at every position (`predict="all"`, the work of
BertForMaskedLM), bfloat16 compute, scanned blocks, and the efficient attentions. Presets:
`full`, `quick` (a tiny model at 32 tokens: dense, same work, bfloat16), `mixers` (the token
mixers beside dense and local, default options), `hybrid` (6 layers: all dense, all local with
a 128-token window, and ModernBERT's hybrid, one dense layer in three; `model.layer_pattern`)
and `device`
(scripts/device_check.sh on a GPU: bfloat16 at 512 and 4K tokens, dense on XLA and cuDNN,
local and BigBird on XLA and the Pallas GPU kernel; `attention.implementation`) and `tpu` (the
same on a TPU with splash in place of cuDNN and the Pallas GPU kernel, 128-token blocks).
"""

from configs.bench import check_preset, measurement

BLOCK = dict(block_size=64)


def get_config(preset: str = "full"):
  check_preset(preset, ("full", "quick", "device", "tpu", "mixers", "hybrid"))
  config = measurement("train_step", repeats=5, max_seconds=120.0)
  # (label, dict(model=<model overrides>, predict="masked" | "all")); the reference is a label.
  config.variants = (
      ("dense", {}),
      ("dense, same work", dict(predict="all")),
      ("dense, bfloat16", dict(model=dict(dtype="bfloat16"))),
      ("dense, scanned blocks", dict(model=dict(scan_layers=True))),
      ("local", dict(model=dict(attention=dict(name="local", window=4, **BLOCK)))),
      ("bigbird", dict(model=dict(attention=dict(name="bigbird", **BLOCK)))),
      ("performer", dict(model=dict(attention=dict(name="performer", num_features=256)))),
  )
  config.reference = "dense"  # ratios are value / this variant's value at the same length
  config.lengths = (512, 2048)
  config.batch_size = 4
  config.dim = 256
  config.num_layers = 4
  config.num_heads = 4
  config.mlp_dim = 1024
  config.vocab_size = 30522  # BERT's WordPiece vocabulary
  config.dropout_rate = 0.0
  config.dtype = "float32"  # compute dtype of every row unless its model overrides it
  config.scan_layers = False  # unrolled blocks (faster on CPU; XLA counts a scan body's FLOPs once)
  config.mask_rate = 0.15  # exactly round(mask_rate * length) predicted positions per row
  config.grad_clip_norm = 1.0
  config.ceiling_size = 2048  # the matmul ceiling: [n, n] x [n, n]
  config.ceiling_seconds = 2.0  # timed calls of the ceiling matmul for at least this long
  if preset == "device":  # one H200 in < 2 minutes (scripts/device_check.sh)
    window = dict(name="local", window_tokens=256, **BLOCK)
    on_one_chip(config, (("dense", dict(name="dense"), ("xla", "cudnn")),
                         ("local", window, ("xla", "pallas_gpu")),
                         ("bigbird", dict(name="bigbird", **BLOCK), ("pallas_gpu",))),
                reference="dense/cudnn")
  if preset == "tpu":  # one TPU chip in < 2 minutes (scripts/device_check.sh)
    window = dict(name="local", window_tokens=256, block_size=128)
    on_one_chip(config, (("dense", dict(name="dense"), ("xla", "splash")),
                         ("local", window, ("xla", "splash")),
                         ("bigbird", dict(name="bigbird", block_size=128), ("splash",))),
                reference="dense/xla")
  if preset == "mixers":  # the token mixers (encoders/mixers/) beside dense and local
    config.variants = (config.variants[0], config.variants[4]) + tuple(
        (name, dict(model=dict(attention=dict(name=name))))
        for name in ("fnet", "s4d", "s5", "mamba", "hyena"))
  if preset == "hybrid":  # docs/baselines.md 10: the cost side of the hybrid-attention claim
    window = dict(name="local", window_tokens=64, **BLOCK)
    config.variants = (
        ("dense", {}),
        ("local", dict(model=dict(attention=window))),
        ("hybrid", dict(model=dict(attention=window,
                                   layer_pattern=({"attention": {"name": "dense"}}, {}, {})))))
    config.update(num_layers=6, lengths=(512, 2048, 4096))
  if preset == "quick":
    config.variants = config.variants[:3]  # dense, same work, bfloat16
    config.update(lengths=(32,), batch_size=2, dim=32, num_layers=1, num_heads=2, mlp_dim=64,
                  vocab_size=97, repeats=2, ceiling_size=256, ceiling_seconds=0.1)
  return config


def on_one_chip(config, cells, reference: str) -> None:
  """An accelerator preset: each (name, attention, implementations) cell once per
  implementation, bfloat16, 512 and 4K tokens, the ceiling and timing sized for one chip."""
  config.variants = tuple(
      (f"{name}/{impl}", dict(model=dict(attention=dict(attention, implementation=impl))))
      for name, attention, impls in cells for impl in impls)
  config.reference = reference
  config.lengths = (512, 4096)
  config.dtype = "bfloat16"
  config.ceiling_size = 8192
  config.repeats, config.max_seconds = 5, 10.0
