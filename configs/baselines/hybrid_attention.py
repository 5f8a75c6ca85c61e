"""Hybrid attention (ModernBERT, Warner et al. 2024): local sliding-window layers with one global
layer in three keep most of all-global quality at a lower cost. MLM on the stdlib corpus at 512
tokens: the hybrid stack vs all-dense vs all-local, 3 seeds.

    python -m experiments.compare --config configs/baselines/hybrid_attention.py \
        --workdir runs/baselines/hybrid_attention

configs/modernbert.py's recipe (GeGLU, no biases, no norm before layer 0's attention,
ModernBERT's truncated init, dropout 0.1 on the attention output, packing, 30% masking,
StableAdamW with weight decay decoupled from the lr, WSD with 1 - sqrt decay) at CPU scale:
3 blocks of width 128 (one pattern group: global, local, local), 512-token packed rows, batch
8, 300 steps; local layers see a 128-token window (64 each side).
All layers use RoPE base 10k, so the variants differ only in which keys a layer sees. Reported:
MLM loss and perplexity (primary, lower is better), train steps/s; the verdict compares the
hybrid's perplexity gap to dense with local's, and their step times.
"""

from configs.baselines import SMOKE_MLM, check_preset, dotted

LOCAL = dict(name="local", window_tokens=64, block_size=64)
GLOBAL = {"attention": {"name": "dense"}}


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Hybrid attention: one global layer in three vs all-dense vs all-local (MLM, 512)"
  study.base = "configs/modernbert.py:tiny"
  overrides = {"model.dim": 128, "model.num_heads": 4, "model.mlp_dim": 256,
               "model.num_layers": 3, "data.text.seq_len": 512, "train.batch_size": 8,
               "train.num_steps": 300, "train.warmup_steps": 30, "train.eval_every": 300,
               "train.checkpoint_every": 300, "train.log_every": 50, "eval.max_batches": 16,
               "progress_bar": False}
  if preset == "smoke":
    overrides.update({**SMOKE_MLM, "model.num_heads": 2, "data.text.seq_len": 128})
  study.overrides = dotted(overrides)
  study.variants = dotted({
      "hybrid": {"model.attention": LOCAL, "model.layer_pattern": (GLOBAL, {}, {})},
      "dense": {"model.attention": {"name": "dense"}, "model.layer_pattern": ()},
      "local": {"model.attention": LOCAL, "model.layer_pattern": ()},
  })
  study.grid = dotted({"variant": ("hybrid", "dense", "local"),
                       "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "perplexity"
  study.extra_metrics = ("accuracy",)
  study.mode = "min"
  study.param_tolerance = 0.0
  return study
