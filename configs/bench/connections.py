"""Cross-layer connections benchmark: parameters, train-step time, memory, compile time vs depth.

    python -m experiments.bench --config configs/bench/connections.py \
        --workdir runs/bench/connections
    python -m experiments.bench --config configs/bench/connections.py:quick --workdir /tmp/bench

One whole classification model per (depth, connection): width 128, 4 heads, MLP 512, learned
positions, pre-norm; batch 8 x 128 tokens, float32; the runner's own train step (experiments/
bench/connections.py). Ratios are to `residual` (scanned blocks, the default) at the same depth;
`residual (loop)` is the same model with `scan_layers=False`. Options are the defaults (densenet:
full history; hyper: 4 streams, static unless marked dynamic). Presets: `full` and `quick`
(depths 1 and 2 of a tiny model, residual and denseformer).
"""

from configs.bench import check_preset, measurement


def get_config(preset: str = "full"):
  check_preset(preset)
  config = measurement("connections", repeats=10, max_seconds=600.0)
  # (row label, model overrides); ratios are to the `reference` label.
  config.variants = (
      ("residual", dict(connection=dict(name="residual"))),
      ("residual (loop)", dict(connection=dict(name="residual"), scan_layers=False)),
      ("denseformer", dict(connection=dict(name="denseformer"))),
      ("scalar_mix", dict(connection=dict(name="scalar_mix"))),
      ("densenet", dict(connection=dict(name="densenet"))),
      ("hyper (n=4)", dict(connection=dict(name="hyper", expansion_rate=4))),
      ("hyper (n=4, dynamic)", dict(connection=dict(name="hyper", expansion_rate=4,
                                                    dynamic=True))),
  )
  config.reference = "residual"
  config.depths = (4, 12, 24)  # numbers of blocks
  config.dim = 128
  config.num_heads = 4
  config.mlp_dim = 512
  config.length = 128
  config.batch_size = 8
  config.vocab_size = 32
  config.num_classes = 10
  config.grad_clip_norm = 1.0  # the runner's default clipping (configs/base.py)
  if preset == "quick":
    config.variants = config.variants[:1] + config.variants[2:3]  # residual, denseformer
    config.update(depths=(1, 2), dim=16, num_heads=2, mlp_dim=16, length=8, batch_size=2,
                  repeats=1)
  return config
