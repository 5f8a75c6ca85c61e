"""The Long Range Arena tasks (Tay et al. 2021, ICLR) with LRA's settings, one file per task:

    python -m experiments.main --config configs/lra/<task>.py --workdir runs/lra/<task>
    python -m experiments.main --config configs/lra/<task>.py:smoke --workdir /tmp/smoke

Tasks: listops, text, retrieval, image, pathfinder, pathx. Settings from LRA's config files
(`lra_benchmarks/<task>/configs/base_*_config.py`); what differs is said in each file. The
`smoke` preset of every file runs in seconds on a CPU (tiny model, a few steps, a sliver of the
data). The study over variants x tasks x seeds: configs/baselines/lra_suite.py.
"""

from configs import base

PRESETS = ("full", "smoke")


def lra_config(preset: str, *, source: str, pooling: str, position: str, dim: int,
               num_layers: int, num_heads: int, qkv_dim: int, mlp_dim: int,
               dropout: float = 0.1, attention_dropout: float = 0.1):
  """The base config with LRA's Transformer (pre-norm blocks; per-head width qkv_dim /
  num_heads; `position` embeddings) and optimizer (Adam b1 0.9, b2 0.98, eps 1e-9, no
  clipping), classifying the `source` data from its `pooling` of the last layer, keeping the
  parameters with the best validation accuracy and testing them at the end."""
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  config = base.get_config("small")
  config.task = "classify"
  config.data.source = source
  config.model.head = dict(name="classification", pooling=pooling, num_classes=0)
  config.model.position = dict(name=position)
  config.model.update(dim=dim, num_layers=num_layers, num_heads=num_heads,
                      head_dim=qkv_dim // num_heads, mlp_dim=mlp_dim, dropout_rate=dropout,
                      attention_dropout_rate=attention_dropout)
  config.train.update(b1=0.9, b2=0.98, eps=1e-9, grad_clip_norm=0.0, log_every=100)
  config.eval.select_best = "accuracy"
  config.progress_bar = True
  return config


def smoke(config, *, steps: int = 2):
  """A few steps of a tiny model: the data path, model and eval end to end in seconds."""
  config.model.update(dim=16, num_layers=1, num_heads=2, head_dim=8, mlp_dim=32)
  config.train.update(batch_size=4, num_steps=steps, warmup_steps=1, log_every=1,
                      eval_every=steps, checkpoint_every=steps)
  config.eval.update(batch_size=8, max_batches=1)
  config.progress_bar = False
  return config
