"""Paper baselines: one study config per published claim (docs/baselines.md has the results).

    python -m experiments.compare --config configs/baselines/<name>.py --workdir runs/<name>

Every study keeps to 45 minutes on 2 CPU cores; `smoke` presets (tests/test_baselines.py) run
each in seconds. This module holds the pieces the studies share.
"""

import ml_collections

# The small MLM pretraining model of the text baselines (configs/mlm.py's data: the Python
# standard library, bytes, 128-token packed rows, batch 32): 4 blocks of width 128, unrolled.
MLM_MINI = {"model.dim": 128, "model.num_layers": 4, "model.num_heads": 4, "model.mlp_dim": 512,
            "model.dropout_rate": 0.0, "model.scan_layers": False, "train.learning_rate": 1e-3,
            "train.warmup_steps": 100, "train.log_every": 50, "progress_bar": False}

# Every cell of a `smoke` preset: a few steps of a tiny model on a sliver of the data.
SMOKE = {"model.dim": 32, "model.num_heads": 2, "model.mlp_dim": 64, "train.batch_size": 8,
         "train.warmup_steps": 1, "train.log_every": 2, "eval.max_batches": 1}

SMOKE_TEXT = {"data.text.max_bytes": 300_000, "data.text.eval_fraction": 0.2}
SMOKE_MLM = {**SMOKE, **SMOKE_TEXT, "train.num_steps": 2, "train.eval_every": 2,
             "train.checkpoint_every": 2}  # the MLM studies' smoke cells

# ListOps of the classification baselines (lra_listops, packing): 32-128 tokens, depth <= 3,
# configs/listops_short.py's 2-block, 128-wide classifier, 500 steps.
LISTOPS_32_128 = {"data.listops.min_length": 32, "data.listops.max_length": 128,
                  "data.listops.max_depth": 3, "train.num_steps": 500, "train.eval_every": 250,
                  "train.checkpoint_every": 500, "progress_bar": False}
SMOKE_LISTOPS = {"data.listops.num_train": 200, "data.listops.num_eval": 50,
                 "train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
                 "train.warmup_steps": 1, "eval.batch_size": 50, "model.dim": 32,
                 "model.num_heads": 2, "model.mlp_dim": 64}


def dotted(fields: dict) -> ml_collections.ConfigDict:
  """A ConfigDict of dotted field -> value (study.overrides / study.variants entries)."""
  return ml_collections.ConfigDict(fields, allow_dotted_keys=True)


def check_preset(preset: str) -> None:
  if preset not in ("full", "smoke"):
    raise ValueError(f"config preset {preset!r}; allowed: full, smoke")
