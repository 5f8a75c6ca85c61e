"""Peer comparison: our MLM train step vs Hugging Face BertForMaskedLM (PyTorch SDPA, Flax).

    pip install -e '.[peers]'
    python -m experiments.bench --config configs/bench/peers.py --workdir runs/bench/peers
    python -m experiments.bench --config configs/bench/peers.py:quick --workdir /tmp/bench

BERT-shaped MLM, hidden 256, 4 layers, 4 heads, FFN 1024, vocabulary 30,522, length 512,
batch 8, float32, clipped AdamW, all in one process with interleaved repeats; tokens/s both for
the same work (full-vocabulary logits everywhere) and for our default (logits only at the
masked positions: the identical loss). See experiments/bench/peers.py. A peer whose packages
are missing is skipped with a message. Presets: `full` and `quick` (tiny).
"""

from configs.bench import check_preset, measurement


def get_config(preset: str = "full"):
  check_preset(preset)
  config = measurement("peers", repeats=5, max_seconds=240.0)
  config.peers = ("pytorch", "flax")  # which peers to run beside ours
  config.reference = "pytorch"  # tokens/s ratios are to this row
  config.dim = 256
  config.num_layers = 4
  config.num_heads = 4
  config.mlp_dim = 1024
  config.vocab_size = 30522  # BERT's WordPiece vocabulary
  config.length = 512
  config.batch_size = 8
  config.mask_rate = 0.15  # exactly round(mask_rate * length) masked positions per row
  config.learning_rate = 1e-4
  config.grad_clip_norm = 1.0
  config.ceiling_size = 2048  # the f32 matmul ceiling: [n, n] x [n, n]
  config.ceiling_seconds = 2.0  # timed calls of the ceiling matmul for at least this long
  if preset == "quick":
    config.update(dim=32, num_layers=1, num_heads=2, mlp_dim=64, vocab_size=97, length=32,
                  batch_size=2, repeats=2, ceiling_size=256, ceiling_seconds=0.1)
  return config
