"""ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer"): MLM with a hybrid stack.

    python -m experiments.main --config configs/modernbert.py:tiny --workdir runs/modernbert

Every third layer (the first of each group of three) attends globally with RoPE base 160k; the
others attend within a 128-token sliding window (64 each side) with RoPE base 10k
(`model.layer_pattern`, encoders/patterns.py). GeGLU FFN, pre-norm, LayerNorm after the
embeddings, no biases in projections or norms. Trained with packing, 30% masking, the
warmup-stable-decay schedule with 1 - sqrt decay and StableAdamW, as in the paper.

Presets: tiny (CPU, the offline stdlib corpus, a 64-token window over 256-token rows), small,
base (22 layers, 768 wide, GLU expansion 2304). Depths 3 and 6 scan one group of three blocks;
base's 22 layers are not a multiple of 3, so its pattern lists all 22 (global at 0, 3, ..., 21,
as the paper's model) and compiles as 22 unrolled blocks.
"""

from configs import mlm

PRESETS = {
    # dim, layers, heads, GLU width per branch (gate and up; expansion = 2x), window, row length
    "tiny": dict(dim=64, num_layers=3, num_heads=4, mlp_dim=96, window=64, seq_len=256),
    "small": dict(dim=256, num_layers=6, num_heads=4, mlp_dim=384, window=128, seq_len=512),
    "base": dict(dim=768, num_layers=22, num_heads=12, mlp_dim=1152, window=128, seq_len=1024),
}
GLOBAL_EVERY = 3  # global attention in layers 0, 3, 6, ... (ModernBERT's global_attn_every_n)


def layer_pattern(num_layers: int) -> tuple[dict, ...]:
  """Global layer (dense, RoPE base 160k) then two local ones; the whole depth when the group
  does not divide it."""
  size = GLOBAL_EVERY if num_layers % GLOBAL_EVERY == 0 else num_layers
  glob = {"attention": {"name": "dense"}, "position": {"base": 160_000.0}}
  return tuple(glob if i % GLOBAL_EVERY == 0 else {} for i in range(size))


def get_config(preset: str = "tiny"):
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  p = PRESETS[preset]
  config = mlm.get_config("small")
  m = config.model
  m.update(dim=p["dim"], num_layers=p["num_layers"], num_heads=p["num_heads"],
           mlp_dim=p["mlp_dim"])
  m.dropout_rate = 0.0  # ModernBERT pretrains without dropout
  m.use_bias = False  # no biases in attention and FFN projections ...
  m.norm = dict(name="layernorm", use_bias=False, epsilon=1e-5)  # ... nor in the norms
  m.norm_position = "pre"
  m.embed_norm = True  # LayerNorm after the token embeddings
  m.ffn = dict(name="glu", activation="gelu")  # GeGLU
  m.position = dict(name="rope", base=10_000.0)  # the local layers'; globals override it
  block = min(64, p["window"] // 2)
  m.attention = dict(name="local", window_tokens=p["window"] // 2, block_size=block)
  m.layer_pattern = layer_pattern(p["num_layers"])
  m.head = dict(name="mlm", tie_embeddings=True)

  config.data.text.seq_len = p["seq_len"]
  config.data.packing.enabled = True  # unpadded, packed rows (their sequence packing)
  config.mlm.mask_rate = 0.3  # 30% masking (80/10/10), as the paper

  t = config.train
  t.optimizer = "stable_adamw"
  t.schedule = "wsd"  # warmup, constant, then 1 - sqrt decay
  t.decay_fraction = 0.1
  t.learning_rate = 8e-4 if preset == "base" else 2e-3
  t.weight_decay = 1e-5
  t.b1, t.b2, t.eps = 0.9, 0.98, 1e-6
  t.grad_clip_norm = 0.0  # StableAdamW's update clipping instead
  t.batch_size = 16 if preset == "tiny" else 32
  t.num_steps = 300 if preset == "tiny" else 2_000
  t.eval_every = t.checkpoint_every = 100 if preset == "tiny" else 500
  config.eval.max_batches = 8 if preset == "tiny" else 0
  return config
