"""Compile-only grids for experiments.aot.grid: what fits on which chip, and the roofline.

    python -m experiments.aot.grid --config configs/aot_cells.py:attention --target h100 \
        --workdir runs/aot/attention_h100
    python -m experiments.aot.grid --config configs/aot_cells.py:models --target v5e:2x2 \
        --workdir runs/aot/models_v5e

`attention`: configs/mlm.py's small encoder (4 blocks, width 256, 4 heads of 64) in bfloat16,
one sequence per device, at 4K, 16K and 64K tokens, with each attention layout on `auto` (the
target's kernel: cuDNN or our Pallas/Triton kernel on GPUs, splash on TPUs) and dense on XLA's
own attention for comparison. Windows as Longformer's token windows (256 each side), BigBird's
blocks of 128 tokens. `models`: the MLM train step of configs/mlm.py:base (BERT-base shape) and
ModernBERT-base (configs/modernbert.py:base) at 1,024 tokens, 8 sequences per device.
"""

import ml_collections


def get_config(preset: str = "attention"):
  grid = ml_collections.ConfigDict()
  grid.length_field = "data.text.seq_len"
  # (field, value) pairs (ConfigDict keys cannot hold dots); a cell's `base` replaces the grid's
  grid.common = (("model.dtype", "bfloat16"), ("train.grad_accum_steps", 1))
  if preset == "attention":
    grid.base = "configs/mlm.py:small"
    grid.lengths = (4096, 16384, 65536)
    grid.per_device_batch = 1
    grid.cells = (
        ("dense (xla)", (("model.attention", dict(name="dense", implementation="xla")),)),
        ("dense", (("model.attention", dict(name="dense")),)),
        ("local", (("model.attention", dict(name="local", block_size=128,
                                             window_tokens=256)),)),
        ("longformer", (("model.attention", dict(name="longformer", block_size=128,
                                                  window_tokens=256)),)),
        ("bigbird", (("model.attention", dict(name="bigbird", block_size=128)),)),
        ("performer", (("model.attention", dict(name="performer")),)),
    )
  elif preset == "models":
    grid.base = "configs/mlm.py:base"
    grid.lengths = (1024,)
    grid.per_device_batch = 8
    grid.cells = (("mlm base", ()),
                  ("modernbert base", (("base", "configs/modernbert.py:base"),)))
  else:
    raise ValueError(f"preset {preset!r}; allowed: attention, models")
  return grid
