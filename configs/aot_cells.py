"""Compile-only grids for experiments.aot.grid: what fits on which chip, and the roofline.

    python -m experiments.aot.grid --config configs/aot_cells.py:attention --target h100 \
        --workdir runs/aot/attention_h100
    python -m experiments.aot.grid --config configs/aot_cells.py:models --target v5e:2x2 \
        --workdir runs/aot/models_v5e

`attention`: configs/mlm.py's small encoder (4 blocks, width 256, 4 heads of 64) in bfloat16,
one sequence per device, at 4K, 16K and 64K tokens, with each attention layout on `auto` (the
target's kernel: cuDNN or our Pallas/Triton kernel on GPUs, splash on TPUs) and dense on XLA's
own attention for comparison. Windows as Longformer's token windows (256 each side), BigBird's
blocks of 128 tokens; rows packed as configs/mlm.py packs them, except Longformer's and
BigBird's (global tokens refuse packed rows). `models`: the MLM train step of
configs/mlm.py:base (BERT-base shape) and ModernBERT-base (configs/modernbert.py:base) at 1,024
tokens, 8 sequences per device. `lra`: the six LRA task configs as they are (README, *Long Range
Arena*: what fits, estimated hours).
"""

import ml_collections


def few_examples(source: str, count: int) -> tuple:
  """Overrides generating `count` train and eval examples of a generated source."""
  return ((f"data.{source}.num_train", count), (f"data.{source}.num_eval", count))


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
        # Global tokens are row positions, refused with packed rows: these two run unpacked.
        ("longformer", (("model.attention", dict(name="longformer", block_size=128,
                                                  window_tokens=256)),
                        ("data.packing.enabled", False))),
        ("bigbird", (("model.attention", dict(name="bigbird", block_size=128)),
                     ("data.packing.enabled", False))),
        ("performer", (("model.attention", dict(name="performer")),)),
    )
  elif preset == "models":
    grid.base = "configs/mlm.py:base"
    grid.lengths = (1024,)
    grid.per_device_batch = 8
    grid.cells = (("mlm base", ()),
                  ("modernbert base", (("base", "configs/modernbert.py:base"),)))
  elif preset == "lra":
    # Each LRA task config as it is (model, batch, steps, dense attention), on the target: the
    # data cut to a few batches (a compile needs their shapes), TFDS data mocked.
    grid.common = ()
    grid.mock_data = True
    grid.show_hours = True
    grid.cells = (
        ("listops", (("base", "configs/lra/listops.py"),) + few_examples("listops", 64)),
        ("text", (("base", "configs/lra/text.py"),)),
        ("retrieval", (("base", "configs/lra/retrieval.py"),)),
        ("image", (("base", "configs/lra/image.py"),)),
        ("pathfinder", (("base", "configs/lra/pathfinder.py"),) + few_examples("pathfinder", 512)),
        ("path-x", (("base", "configs/lra/pathx.py"),) + few_examples("pathfinder", 64)),
    )
    grid.base = "configs/lra/listops.py"
  else:
    raise ValueError(f"preset {preset!r}; allowed: attention, models, lra")
  return grid
