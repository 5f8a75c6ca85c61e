"""Baseline 9: state-space mixers vs attention on longer ListOps, at equal parameters.

    python -m experiments.compare --config configs/baselines/ssm_listops.py \
        --workdir runs/baselines/ssm_listops

Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4), and
Smith et al. 2023, "Simplified State Space Layers for Sequence Modeling" (S5): on LRA ListOps S4
reaches 59.6% and S5 62.2% where the Transformer reaches 36.4%, Local 15.8% and Performer 18.0%;
the claim is that SSM mixers beat attention on long-range tasks. Here: our generated, seeded
ListOps (experiments/data/listops.py) at 256-384 tokens (LRA: 500-2,000; the longest at which
the 15 cells fit about an hour on 2 cores), nesting depth <= 5 (LRA: 9), 10k training examples,
configs/listops_short.py's 2-block classifier at width 64 (4 heads, MLP 128), batch 16, 500
AdamW steps, with one token mixer swapped per cell: dense, local (one 32-token block each side),
Performer (64 features), S4D (the diagonal LTI SSM, 32 states) and bidirectional Mamba (the
selective SSM, expand 1, 16 states). Parameters: 97,610 for the attention cells, S4D -4.2%,
Mamba +7.6%. S4D's dt/A parameters learn at min(lr, 1e-3) with no weight decay, S4's rule
(`lr_rule="cap"`), its C and D decay; Mamba's A and D take no decay, everything else (its
convolution's taps included) does, and its projections init as the reference's (encoders/
mixers/mamba.py). Absolute learned positions feed every cell (mixers ignore RoPE). Seeds 0-2.
"""

from configs.baselines import LISTOPS_32_128, SMOKE_LISTOPS, check_preset, dotted


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "ListOps (256-384 tokens): state-space mixers vs attention at equal parameters"
  study.base = "configs/listops_short.py"
  overrides = {**LISTOPS_32_128, "data.listops.min_length": 256,
               "data.listops.max_length": 384, "data.listops.max_depth": 6,
               "data.listops.num_train": 10_000, "model.dim": 64, "model.mlp_dim": 128,
               "train.batch_size": 16, "train.num_steps": 500, "train.eval_every": 250,
               "train.checkpoint_every": 500, "train.on_nonfinite": "skip"}
  study.variants = dotted({
      "dense": {"model.attention": dict(name="dense")},
      "local": {"model.attention": dict(name="local", block_size=32, window=1)},
      "performer": {"model.attention": dict(name="performer", num_features=64)},
      # S4's rule: the SSM parameters learn at min(lr, 1e-3) (here 1e-3, the run's rate).
      "s4d": {"model.attention": dict(name="s4d", state_size=32, lr_rule="cap", ssm_lr=1e-3)},
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
  study.param_tolerance = 0.13  # S4D -4.2%, Mamba +7.6% of the attention cells
  return study
