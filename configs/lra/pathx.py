"""LRA Path-X (Tay et al. 2021): Pathfinder at 128x128 pixels, 16,384 tokens.

    python -m experiments.main --config configs/lra/pathx.py --workdir runs/lra/pathx
    python -m experiments.main --config configs/lra/pathx.py:smoke --workdir /tmp/lra_pathx

Same model and schedule as configs/lra/pathfinder.py, batch 64, on 128x128 images from our
generator (lengths scaled by 4; experiments/data/pathfinder.py) or LRA's release:
`--config.data.pathfinder.lra_dir=lra_release/pathfinder128/curv_contour_length_14`. Every LRA
model stayed at chance on Path-X. The `smoke` preset runs `local` attention (128-token blocks):
dense scores at 16K tokens are a 1 GB matrix per head and example, beyond a quick CPU check.
"""

from configs import lra
from configs.lra import pathfinder


def get_config(preset: str = "full"):
  config = pathfinder.get_config("full" if preset == "smoke" else preset)
  config.data.pathfinder.size = 128
  config.train.batch_size = 64
  config.eval.batch_size = 64
  if preset == "smoke":
    config.data.pathfinder.update(num_train=8, num_eval=4)
    config.model.attention = dict(name="local", block_size=128)
    lra.smoke(config)
    config.train.batch_size = 2
    config.eval.batch_size = 2
  return config
