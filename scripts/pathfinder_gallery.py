"""Draws docs/pathfinder_gallery.png: our Pathfinder images (both labels, LRA's three 32-px
difficulties and Path-X at 128 px) beside the properties of the original generator they follow.

    PYTHONPATH=. python scripts/pathfinder_gallery.py [--out docs/pathfinder_gallery.png]

Each 32-px image is shown at 4x (nearest neighbour) so single pixels stay visible; the Path-X
images at 1x. Left of each row, its setting; a positive's markers end the same contour, a
negative's the two different ones (experiments/data/pathfinder.py).
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.data import pathfinder  # noqa: E402

ORIGINAL = (
    "The original (drewlinsley/pathfinder snakes2.py, at LRA's Pathfinder32 settings):\n"
    "  paddles of 2 px, gaps of 2 x margin = 2 px, a pivot every 4 px;\n"
    "  14 / 9 / 6 paddles per contour (hard / intermediate / easy);\n"
    "  each turn weighted cos^2(turn), up to +-90 degrees; paddles leaving the image refused;\n"
    "  every paddle's mask (grown by the margin) keeps later ones off;\n"
    "  contour 1 starts near the centre, contour 2 seven px from it; one marker on a start;\n"
    "  thin anti-aliased gray lines (distractors brighter), round anti-aliased markers.")
PER_LABEL = 4  # images of each label per row


def _pick(data, label: int) -> np.ndarray:
  return data["images"][data["labels"] == label][:PER_LABEL]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/pathfinder_gallery.png")
  args = parser.parse_args()
  rows = [(f"32 px, {length} paddles", pathfinder.generate(16, seed=7, contour_length=length))
          for length in (14, 9, 6)]
  rows.append(("Path-X, 128 px, 14", pathfinder.generate(32, seed=7, size=128)))
  fig, axes = plt.subplots(len(rows), 2 * PER_LABEL, figsize=(2 * PER_LABEL * 1.1, 6.3))
  for r, (name, data) in enumerate(rows):
    for label in (1, 0):
      for i, image in enumerate(_pick(data, label)):
        ax = axes[r, (1 - label) * PER_LABEL + i]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
          ax.set_title("positive" if label else "negative", fontsize=8)
    axes[r, 0].set_ylabel(name, fontsize=8)
  fig.text(0.01, 0.005, ORIGINAL, fontsize=7, family="monospace", va="bottom")
  fig.subplots_adjust(left=0.05, right=0.99, top=0.95, bottom=0.2, wspace=0.05, hspace=0.08)
  fig.savefig(args.out, dpi=80)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
