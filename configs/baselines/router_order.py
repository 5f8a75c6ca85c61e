"""Baseline 3: router order, softmax-then-topK vs topK-then-softmax, 8 experts top-2 (MLM).

    python -m experiments.compare --config configs/baselines/router_order.py \
        --workdir runs/baselines/router_order

"Upcycling Large Language Models into Mixture of Experts" (He et al. 2024): "softmax-then-topK
expert routing improves over topK-then-softmax". Ours: the 128-wide MLM_MINI encoder on the
stdlib corpus (configs/mlm_moe.py: an MoE FFN with 8 experts of width 512, top-2, dropless,
in every second block; balancing loss 0.01, z-loss 0.001) trained from scratch for 400 steps,
seeds 0-2. The cells differ only in the gates: `softmax_then_topk` keeps the two largest
probabilities of the softmax over all 8 experts as they are (they sum to less than 1, and the
router's gradient sees every expert's logit), `topk_then_softmax` (Mixtral's) takes a softmax
over the two selected logits (gates sum to 1). Renormalising the former would make the two
identical, so it is off. Equal parameters and FLOPs.
"""

from configs.baselines import MLM_MINI, SMOKE_MLM, check_preset, dotted


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Router order: softmax-then-topK vs topK-then-softmax (8 experts, top-2, MLM)"
  study.base = "configs/mlm_moe.py:small"
  overrides = {**MLM_MINI, "train.num_steps": 400, "train.eval_every": 200,
               "train.checkpoint_every": 400, "model.ffn.num_experts": 8, "model.ffn.top_k": 2}
  seeds = (0, 1, 2)
  if preset == "smoke":
    overrides.update(SMOKE_MLM)
    seeds = (0,)
  study.overrides = dotted(overrides)
  study.variants = dotted({  # softmax-then-topK as in the paper: the top-k of the full softmax,
      # not renormalised (renormalised, it would equal topK-then-softmax exactly)
      "softmax_then_topk": {"model.ffn.order": "softmax_then_topk", "model.ffn.renormalize": False},
      "topk_then_softmax": {"model.ffn.order": "topk_then_softmax"},
  })
  study.grid = dotted({"variant": ("softmax_then_topk", "topk_then_softmax"), "seed": seeds})
  study.primary_metric = "loss"
  study.extra_metrics = ("perplexity",)
  study.mode = "min"
  study.param_tolerance = 0.0
  return study
