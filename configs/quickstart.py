"""Quickstart study: five encoder variants on short generated ListOps, then their attention
layers at 4K tokens: both halves of the trade-off in one command (minutes on 2 CPU cores).

    python -m experiments.compare --config configs/quickstart.py --workdir runs/quickstart

Every cell is configs/listops_short.py (16-64 tokens, 2 blocks of width 128, batch 64) trained
for 400 AdamW steps (eval every 50: 8 points per curve) with one variant swapped in, one seed
each:

- `dense`: softmax attention (Vaswani et al. 2017), the reference;
- `bigbird`: block-sparse attention (Zaheer et al. 2020), 16-token blocks: window, global and
  random blocks;
- `performer`: kernelized attention with positive random features (Choromanski et al. 2021);
- `moe`: a top-2 mixture of 4 experts of width 128 in place of the 256-wide MLP (same active
  FFN compute, 2x the FFN parameters, so the fairness check flags it);
- `denseformer`: depth-weighted averages of all earlier block outputs (Pagliardini et al.
  2024).

At the end it prints the results table (results.md: accuracy, parameters, tokens/s, peak
memory, FLOPs per step, compile time) and, beside it, one attention layer of each variant at
4,096 tokens (the attention benchmark: forward+backward time and peak memory as ratios to dense,
measured in the same run; at 16-64 tokens the efficient attentions have nothing to save, at 4K
they do), and writes results.csv, eval_curves.png and pareto.png.
Rerunning skips finished cells. More seeds: `--config.grid.seed='(0, 1, 2)'`.
"""

import ml_collections

from configs.bench import attention as attention_bench


def get_config():
  study = ml_collections.ConfigDict()
  study.name = "Quickstart: encoder variants on ListOps (16-64 tokens)"
  study.base = "configs/listops_short.py"  # base experiment config, "path[:preset]"
  study.overrides = ml_collections.ConfigDict(  # dotted config field -> value, every cell
      {"train.num_steps": 400, "train.eval_every": 50, "train.checkpoint_every": 200,
       "progress_bar": False}, allow_dotted_keys=True)
  study.variants = ml_collections.ConfigDict({  # label -> overrides; picked by grid "variant"
      "dense": {},
      "bigbird": {"model.attention": dict(name="bigbird", block_size=16)},
      "performer": {"model.attention": dict(name="performer", num_features=64)},
      "moe": {"model.ffn": dict(name="moe", num_experts=4, top_k=2, expert_dim=128)},
      "denseformer": {"model.connection.name": "denseformer"},
  }, allow_dotted_keys=True)
  study.grid = ml_collections.ConfigDict({  # dotted config field -> values; cartesian product
      "variant": list(study.variants), "seed": (0,)}, allow_dotted_keys=True)
  study.primary_metric = "accuracy"  # eval metric that sorts results.md
  study.mode = "max"  # max | min: which direction of the primary metric is better
  study.param_tolerance = 0.10  # warn when parameter counts differ by more than this
  # Then time the cells' attention layers at 4,096 tokens (the attention benchmark's settings).
  study.attention_bench = attention_bench.get_config("study")
  return study
