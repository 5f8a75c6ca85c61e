"""Study: attention variants and token mixers on short generated ListOps, 3 seeds each.

    python -m experiments.compare --config configs/compare_attention.py --workdir runs/attention

Every cell is configs/listops_short.py with one attention variant or token mixer swapped in
(same width, depth and training budget); results.md reports mean ± std over seeds and checks
that the parameter counts stay within 10% of each other. Against dense: Linformer adds its
length projections (+6%), s4d has 6% fewer parameters, and mamba at the paper's expand=2 has
47% more (its in and out projections hold 6 dim^2 weights to attention's 4 dim^2), so
results.md carries the fairness warning.
"""

import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = "Attention variants on ListOps (16-64 tokens)"
  study.base = "configs/listops_short.py"  # base experiment config, "path[:preset]"
  study.overrides = ml_collections.ConfigDict(  # dotted config field -> value, every cell
      {"train.num_steps": 1_000, "train.eval_every": 250, "progress_bar": False},
      allow_dotted_keys=True)
  study.grid = ml_collections.ConfigDict({  # dotted config field -> values; cartesian product
      "model.attention.name": ["dense", "local", "bigbird", "performer", "linformer", "s4d",
                               "mamba"],
      "seed": [0, 1, 2],
  }, allow_dotted_keys=True)
  study.primary_metric = "accuracy"  # eval metric that sorts results.md
  study.mode = "max"  # max | min: which direction of the primary metric is better
  study.param_tolerance = 0.10  # warn when parameter counts differ by more than this
  return study
