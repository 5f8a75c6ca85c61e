"""ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer"): MLM with a hybrid stack.

    python -m experiments.main --config configs/modernbert.py:tiny --workdir runs/modernbert

The architecture is ModernBERT's, tensor for tensor (tests/test_convert_families.py checks a
transformers ModernBertForMaskedLM against it to 1e-5, both directions;
encoders/convert/modernbert.py maps the checkpoints): every third layer (the first of each
group of three) attends globally, the others within a 128-token sliding window (64 each side;
`model.layer_pattern`, encoders/patterns.py); RoPE; GeGLU FFN; pre-norm LayerNorm without
biases, one after the embeddings, none before layer 0's attention (`model.skip_first_prenorm`);
no biases in the projections; the MLM head's dense has no bias, its tied decoder has one.
Training as the paper and its code: init "full_megatron" (`model.init_method = "modernbert"`),
dropout 0.1 on the attention output only, packing, 30% masking, warmup-stable-decay with
1 - sqrt decay, StableAdamW (lr 8e-4 base / 5e-4 large, betas 0.9 / 0.98, eps 1e-6, wd 1e-5
decoupled from the lr: `train.weight_decay_scale = "schedule"`).

Presets: tiny (CPU, the offline stdlib corpus, a 64-token window over 256-token rows), small,
base (22 layers, 768 wide, 12 heads, GLU 1152 per branch) and large (28 layers, 1024 wide, 16
heads, GLU 2624 per branch) in the 1,024-token pretraining phase, where global and local layers
both use RoPE theta 10k; `base_long` / `large_long`: the 8,192-token context extension, global
theta 160k. base's 22 layers are not a multiple of 3, so its pattern lists all 22 (global at 0,
3, ..., 21, as the paper's model) and compiles as 22 unrolled blocks (large: 28, likewise).

What still differs from ModernBERT, and why (the one place this is listed):
- Data and tokenizer: ModernBERT trains on 2T tokens of web, code and science text with its
  50,368-token BPE; tiny/small read the offline stdlib corpus as bytes (CPU scale). A converted
  checkpoint brings its own tokenizer (experiments/pretrained.py).
- Schedule lengths and batch: ModernBERT warms up over 3B (base) / 2B (large) tokens, trains
  1.7T tokens at 1,024, then extends the context; it also warms the batch size up. The presets'
  step counts and batch sizes are CPU-sized, and the batch-size warmup is not implemented.
- Unpadding: ModernBERT removes padding and runs FlashAttention on variable-length sequences; we
  pack rows with segment ids (the same attention pattern; padding only at row ends).
- Evaluation: their code scores MLM at 15% masking, ours at the training rate (30%).
- Layer 0's attention norm keeps (unused) parameters, so that scanned and unrolled stacks share
  one layout; the converter writes the identity there and leaves it out on export.
"""

from configs import mlm

PRESETS = {
    # dim, layers, heads, GLU width per branch (gate and up; expansion = 2x), window, row length,
    # global RoPE theta, peak lr
    "tiny": dict(dim=64, num_layers=3, num_heads=4, mlp_dim=96, window=64, seq_len=256,
                 global_theta=10_000.0, lr=2e-3),
    "small": dict(dim=256, num_layers=6, num_heads=4, mlp_dim=384, window=128, seq_len=512,
                  global_theta=10_000.0, lr=2e-3),
    "base": dict(dim=768, num_layers=22, num_heads=12, mlp_dim=1152, window=128, seq_len=1024,
                 global_theta=10_000.0, lr=8e-4),
    "large": dict(dim=1024, num_layers=28, num_heads=16, mlp_dim=2624, window=128,
                  seq_len=1024, global_theta=10_000.0, lr=5e-4),
    "base_long": dict(dim=768, num_layers=22, num_heads=12, mlp_dim=1152, window=128,
                      seq_len=8192, global_theta=160_000.0, lr=8e-4),
    "large_long": dict(dim=1024, num_layers=28, num_heads=16, mlp_dim=2624, window=128,
                       seq_len=8192, global_theta=160_000.0, lr=5e-4),
}
GLOBAL_EVERY = 3  # global attention in layers 0, 3, 6, ... (ModernBERT's global_attn_every_n)
LOCAL_THETA = 10_000.0  # RoPE theta of the local layers, in every phase


def layer_pattern(num_layers: int, global_theta: float) -> tuple[dict, ...]:
  """Global layer (dense, RoPE base `global_theta`) then two local ones; the whole depth when
  the group does not divide it."""
  size = GLOBAL_EVERY if num_layers % GLOBAL_EVERY == 0 else num_layers
  glob = {"attention": {"name": "dense"}, "position": {"base": global_theta}}
  return tuple(glob if i % GLOBAL_EVERY == 0 else {} for i in range(size))


def get_config(preset: str = "tiny"):
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  p = PRESETS[preset]
  config = mlm.get_config("small")
  m = config.model
  m.update(dim=p["dim"], num_layers=p["num_layers"], num_heads=p["num_heads"],
           mlp_dim=p["mlp_dim"])
  m.dropout_rate = 0.0  # no embedding, FFN or head dropout ...
  m.attention_output_dropout_rate = 0.1  # ... but 0.1 on the attention output
  m.use_bias = False  # no biases in attention and FFN projections ...
  m.norm = dict(name="layernorm", use_bias=False, epsilon=1e-5)  # ... nor in the norms
  m.norm_position = "pre"
  m.embed_norm = True  # LayerNorm after the token embeddings
  m.skip_first_prenorm = True  # ... so layer 0's attention reads them without another norm
  m.init_method = "modernbert"  # truncated normal, output projections / sqrt(2 * layers)
  m.ffn = dict(name="glu", activation="gelu")  # GeGLU
  m.position = dict(name="rope", base=LOCAL_THETA)  # the local layers'; globals override it
  block = min(64, p["window"] // 2)
  m.attention = dict(name="local", window_tokens=p["window"] // 2, block_size=block)
  m.layer_pattern = layer_pattern(p["num_layers"], p["global_theta"])
  m.head = dict(name="mlm", tie_embeddings=True, transform_bias=False)

  config.data.text.seq_len = p["seq_len"]
  config.data.packing.enabled = True  # unpadded, packed rows (their sequence packing)
  config.mlm.mask_rate = 0.3  # 30% masking (80/10/10), as the paper

  t = config.train
  t.optimizer = "stable_adamw"
  t.schedule = "wsd"  # warmup, constant, then 1 - sqrt decay
  t.decay_fraction = 0.1
  t.learning_rate = p["lr"]
  t.weight_decay = 1e-5
  t.weight_decay_scale = "schedule"  # optimi's decouple_lr: decay (lr_t / peak) * wd
  t.b1, t.b2, t.eps = 0.9, 0.98, 1e-6
  t.grad_clip_norm = 0.0  # StableAdamW's update clipping instead
  t.batch_size = 16 if preset == "tiny" else 32
  t.num_steps = 300 if preset == "tiny" else 2_000
  t.eval_every = t.checkpoint_every = 100 if preset == "tiny" else 500
  config.eval.max_batches = 8 if preset == "tiny" else 0
  return config
