"""The Long Range Arena tasks (Tay et al. 2021, ICLR) as LRA's code sets them, one file per task:

    python -m experiments.main --config configs/lra/<task>.py --workdir runs/lra/<task>
    python -m experiments.main --config configs/lra/<task>.py:<variant> --workdir runs/lra/<task>
    python -m experiments.main --config configs/lra/<task>.py:smoke --workdir /tmp/smoke

Tasks: listops, text, retrieval, image, pathfinder, pathx. `full` is the published Transformer
row's config (LRA's `lra_benchmarks/<task>/configs/transformer_base.py` over its
`base_*_config.py`); a variant preset (local, sparse_transformer, longformer, linformer,
bigbird, linear_transformer, performer) is LRA's `<variant>_base.py` for that task: its
attention and, where LRA's file sets them, its sizes. What still differs is said in each file's
docstring. The `smoke` preset of every file runs in seconds on a CPU (tiny model, a few steps, a
sliver of the data). The study over variants x tasks x seeds: configs/baselines/lra_suite.py.
"""

from configs import base

BLOCK = 64  # LRA's block_size for its block-sparse variants
# LRA's model_type -> our registered attention (encoders/attention/).
ATTENTION = {
    "transformer": dict(name="dense"),
    "local": dict(name="local", block_size=BLOCK, window=1),
    "sparse_transformer": dict(name="strided", block_size=BLOCK),
    "longformer": dict(name="longformer", block_size=BLOCK, window=1),
    "linformer": dict(name="linformer", k=256),
    "bigbird": dict(name="bigbird", block_size=BLOCK),
    "linear_transformer": dict(name="linear"),
    "performer": dict(name="performer", num_features=256),
}
PRESETS = ("full", "smoke") + tuple(v for v in ATTENTION if v != "transformer")


def lra_config(preset: str, *, source: str, pooling: str, position: str, dim: int,
               num_layers: int, num_heads: int, qkv_dim: int, mlp_dim: int,
               dropout: float = 0.1, attention_dropout: float = 0.1,
               sizes: dict | None = None):
  """The base config with LRA's Transformer (pre-norm blocks; per-head width qkv_dim /
  num_heads; `position` embeddings), LRA's classifier head (Dense(mlp_dim) -> ReLU -> Dense)
  and optimizer (Adam b1 0.9, b2 0.98, eps 1e-9, no clipping), classifying the `source` data
  from its `pooling` of the last layer, keeping the parameters with the best validation
  accuracy and testing them at the end. A variant preset swaps LRA's attention in and, from
  `sizes` ({variant: dict(num_layers=, num_heads=, dim=, qkv_dim=, mlp_dim=, dropout=)}), the
  sizes LRA's `<variant>_base.py` sets for the task."""
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  size = dict(num_layers=num_layers, num_heads=num_heads, dim=dim, qkv_dim=qkv_dim,
              mlp_dim=mlp_dim, dropout=dropout)
  size.update((sizes or {}).get(preset, {}))
  config = base.get_config("small")
  config.task = "classify"
  config.data.source = source
  config.model.head = dict(name="lra_classification", pooling=pooling, num_classes=0)
  config.model.position = dict(name=position)
  config.model.update(dim=size["dim"], num_layers=size["num_layers"],
                      num_heads=size["num_heads"], head_dim=size["qkv_dim"] // size["num_heads"],
                      mlp_dim=size["mlp_dim"], dropout_rate=size["dropout"],
                      attention_dropout_rate=attention_dropout)
  if preset in ATTENTION:
    config.model.attention = dict(ATTENTION[preset])
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
