"""Baseline 9: state-space mixers vs attention on longer ListOps, at equal parameters.

    python -m experiments.compare --config configs/baselines/ssm_listops.py \
        --workdir runs/baselines/ssm_listops

Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4), and
Smith et al. 2023, "Simplified State Space Layers for Sequence Modeling" (S5): on LRA ListOps S4
reaches 59.6% and S5 62.2% where the Transformer reaches 36.4%, Local 15.8% and Performer 18.0%;
the claim is that SSM mixers beat attention on long-range tasks. Here: our generated, seeded
ListOps (experiments/data/listops.py) at 256-512 tokens (LRA: 500-2,000), nesting depth <= 5
(LRA: 9), the 2-block, 128-wide classifier of configs/listops_short.py with one token mixer
swapped per cell: dense, local (one 32-token block each side), Performer (64 features), S4D, S5
and bidirectional Mamba. Each mixer's width options are chosen so that every cell has the
attention cells' parameters within 8% (S4D: 64 states; S5: 128 states in 4 blocks; Mamba: expand
1). The SSMs' dt/A/B parameters learn at 0.1x the rate with no weight decay, as S4/S5
(`lr_ratio`). Absolute learned positions feed every cell (mixers ignore RoPE). Seeds 0-2.
"""

from configs.baselines import LISTOPS_32_128, SMOKE_LISTOPS, check_preset, dotted


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "ListOps (256-512 tokens): state-space mixers vs attention at equal parameters"
  study.base = "configs/listops_short.py"
  overrides = {**LISTOPS_32_128, "data.listops.min_length": 256,
               "data.listops.max_length": 512, "data.listops.max_depth": 6,
               "data.listops.num_train": 10_000,
               "train.batch_size": 16, "train.num_steps": 600, "train.eval_every": 300,
               "train.checkpoint_every": 600, "train.on_nonfinite": "skip"}
  study.variants = dotted({
      "dense": {"model.attention": dict(name="dense")},
      "local": {"model.attention": dict(name="local", block_size=32, window=1)},
      "performer": {"model.attention": dict(name="performer", num_features=64)},
      "s4d": {"model.attention": dict(name="s4d", state_size=64)},
      "s5": {"model.attention": dict(name="s5", state_size=128, blocks=4)},
      "mamba": {"model.attention": dict(name="mamba", expand=1)},
  })
  seeds = (0, 1, 2)
  if preset == "smoke":
    overrides.update({**SMOKE_LISTOPS, "data.listops.min_length": 32,
                      "data.listops.max_length": 64, "train.batch_size": 8})
    seeds = (0,)
  study.overrides = dotted(overrides)
  variants = tuple(study.variants)
  if preset == "smoke":
    variants = ("dense", "s4d", "mamba")
  study.grid = dotted({"variant": variants, "seed": seeds})
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 0.08
  return study
