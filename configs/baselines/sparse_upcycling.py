"""Baseline 4: Sparse Upcycling vs continued dense training for the same extra steps (MLM).

    python -m experiments.compare --config configs/baselines/sparse_upcycling.py \
        --workdir runs/baselines/sparse_upcycling

Komatsuzaki et al. 2023, "Sparse Upcycling": an MoE initialised from a dense checkpoint
(experts = copies of its FFN) beats continued dense training, "using only ~50% of the initial
dense pretraining sunk cost". Ours, per seed (0-2), in one study:
1. `dense_pretrain`: the 128-wide MLM_MINI encoder, 400 steps on the stdlib corpus;
2. `dense_continued`: that checkpoint trained 300 more steps (fresh AdamW and schedule);
3. `upcycled`: that checkpoint upcycled (every second FFN -> 8 copies, top-2 renormalised
   router, exact at step 0) and trained the same 300 steps with the same optimizer settings.
Same extra steps and data (a new data order, `data.shuffle_seed=1`); the upcycled model has 2x
the active FFN FLOPs of its MoE blocks (top-2) and 8x their FFN parameters, as in the paper
(equal steps, not equal FLOPs; results.md reports both models' FLOPs per step).
"""

from configs.baselines import MLM_MINI, SMOKE, SMOKE_TEXT, check_preset, dotted

SOURCE = "{workdir}/cells/seed={seed},variant=dense_pretrain"


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Sparse upcycling vs continued dense training (MLM, stdlib corpus)"
  study.base = "configs/mlm.py:small"
  pretrain, extra = 400, 300
  overrides = {**MLM_MINI, "train.checkpoint_every": 200}
  if preset == "smoke":
    overrides.update({**SMOKE, **SMOKE_TEXT})
    pretrain, extra = 2, 2
  continued = {"train.num_steps": extra, "train.eval_every": extra, "data.shuffle_seed": 1,
               "train.warmup_steps": min(50, extra - 1),
               "init_from.workdir": SOURCE, "init_from.upcycle": True}
  study.variants = dotted({
      "dense_pretrain": {"train.num_steps": pretrain, "train.eval_every": pretrain},
      "dense_continued": continued,
      "upcycled": {**continued, "base": "configs/mlm_moe.py:small",
                   "model.ffn.num_experts": 8, "model.ffn.top_k": 2},
  })
  study.overrides = dotted(overrides)
  study.grid = dotted({"variant": ("dense_pretrain", "dense_continued", "upcycled"),
                       "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "loss"
  study.extra_metrics = ("perplexity",)
  study.mode = "min"
  study.param_tolerance = 10.0  # the MoE has more parameters by design
  return study
