"""Short generated ListOps: a small encoder that learns in minutes on 2 CPU cores.

    python -m experiments.main --config configs/listops_short.py --workdir runs/listops_short

Short ListOps (16-64 tokens, operators nested at most 2 deep) so that a laptop CPU learns it in
minutes; the full LRA setting is configs/listops.py. Prints progress and the final eval
accuracy; compare it with the majority-class rate given in the README. The base experiment of
the quickstart study (configs/quickstart.py) and of configs/compare_attention.py.
"""

from configs import listops


def get_config(preset: str = "tiny"):
  config = listops.get_config(preset)
  config.data.listops.update(num_train=20_000, num_eval=1_000, min_length=16, max_length=64,
                             max_depth=3, max_args=10)
  config.model.update(dim=128, num_layers=2, num_heads=4, mlp_dim=256, dropout_rate=0.0)
  config.train.update(batch_size=64, num_steps=1_500, learning_rate=1e-3, warmup_steps=100,
                      log_every=100, eval_every=500, checkpoint_every=500)
  config.eval.batch_size = 250
  return config
