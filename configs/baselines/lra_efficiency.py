"""Baseline 1b: LRA's efficiency table: train steps/s and peak memory vs the Transformer, 1K-4K.

    python -m experiments.bench --config configs/baselines/lra_efficiency.py \
        --workdir runs/baselines/lra_efficiency

Tay et al. 2021, "Long Range Arena" (Table 2, training speed relative to the Transformer at 1K-4K
tokens, and peak memory): at 4K Local 5.3x, Linformer 5.5x, Linear Trans. 5.6x, Performer 5.7x,
BigBird 1.1x faster than the Transformer. Ours: the train-step benchmark (configs/bench/
train_step.py, experiments/bench/train_step.py: forward, backward, AdamW) of LRA's model size
(4 blocks, width 256, 4 heads, MLP 1024) with every LRA attention variant at 1K, 2K and 4K
tokens, batch 2 (a CPU), float32; steps/s and XLA's compiled peak memory as ratios to dense
measured in the same run, rounds interleaved. The objective is MLM with a 32-token vocabulary
(ListOps-sized) predicting 15% of the positions, so the head's cost is negligible, as with
LRA's classifier.
"""

import ml_collections

from configs.bench import train_step

BLOCK = dict(block_size=64)


def get_config(preset: str = "full") -> ml_collections.ConfigDict:
  if preset not in ("full", "smoke"):
    raise ValueError(f"config preset {preset!r}; allowed: full, smoke")
  config = train_step.get_config("full")  # its model size, f32, unrolled, 15% predicted
  config.variants = (  # LRA's names; block-sparse patterns with 64-token blocks
      ("transformer", {}),
      ("local", dict(model=dict(attention=dict(name="local", window=1, **BLOCK)))),
      ("sparse_transformer", dict(model=dict(attention=dict(name="strided", **BLOCK)))),
      ("longformer", dict(model=dict(attention=dict(name="longformer", window=1, **BLOCK)))),
      ("linformer", dict(model=dict(attention=dict(name="linformer", k=256)))),
      ("bigbird", dict(model=dict(attention=dict(name="bigbird", **BLOCK)))),
      ("linear_transformer", dict(model=dict(attention=dict(name="linear")))),
      ("performer", dict(model=dict(attention=dict(name="performer", num_features=256)))),
  )
  config.update(reference="transformer", lengths=(1024, 2048, 4096), batch_size=2,
                vocab_size=32, repeats=3, max_seconds=60.0, ceiling_seconds=1.0)
  if preset == "smoke":
    config.update(lengths=(64,), batch_size=1, dim=32, num_layers=1, num_heads=2, mlp_dim=64,
                  repeats=1, ceiling_size=128, ceiling_seconds=0.05)
    config.variants = (("transformer", {}),
                       ("local", dict(model=dict(attention=dict(name="local", block_size=16,
                                                                window=1)))),
                       ("performer", dict(model=dict(attention=dict(name="performer",
                                                                    num_features=16)))))
  return config
