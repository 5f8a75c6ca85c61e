"""Label integrity of Pathfinder images read from their pixels alone (no generator masks): where
the two markers are, whether ink joins them, and how well their distance alone predicts the
label. tests/test_pathfinder.py holds the generator (experiments/data/pathfinder.py) to the
rates this prints for the original's rules:

    PYTHONPATH=. python -m experiments.data.pathfinder_integrity --n 10240 --seed 11
"""

from __future__ import annotations

import argparse

import numpy as np

INK = 128  # a pixel at least half the brightest (every image's brightest is 255) is ink


def markers_from_pixels(images: np.ndarray) -> np.ndarray:
  """The two brightest 2x2 cores (the markers' discs; lines are thinner) more than 3 pixels
  apart: int [N, 2, (row, col)]."""
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  n, size = images.shape[0], images.shape[1]
  core = ndimage.grey_erosion(images, size=(1, 2, 2)).reshape(n, -1).astype(int)
  first = core.argmax(1)
  rows, cols = np.divmod(np.arange(size * size), size)
  far = (rows - first[:, None] // size) ** 2 + (cols - first[:, None] % size) ** 2 > 9
  second = np.where(far, core, -1).argmax(1)
  return np.stack([np.stack(np.divmod(first, size), -1),
                   np.stack(np.divmod(second, size), -1)], 1)


def joined_in_ink(images: np.ndarray, markers: np.ndarray, threshold: int = INK) -> np.ndarray:
  """bool [N]: the two marker centres lie in one 8-connected component of ink."""
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  out = np.zeros(len(images), bool)
  for i, (image, (a, b)) in enumerate(zip(images, markers)):
    components, _ = ndimage.label(image >= threshold, structure=np.ones((3, 3), bool))
    out[i] = components[tuple(a)] > 0 and components[tuple(a)] == components[tuple(b)]
  return out


def distance_accuracy(markers: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy on the second half of a threshold on the marker distance (either direction)
  fitted on the first half."""
  distance = np.linalg.norm((markers[:, 0] - markers[:, 1]).astype(float), axis=1)
  half = len(labels) // 2
  best = (-1.0, 0.0, True)
  for cut in np.unique(distance[:half]):
    for above in (True, False):
      accuracy = (((distance[:half] > cut) == above) == labels[:half]).mean()
      best = max(best, (accuracy, cut, above))
  _, cut, above = best
  return float((((distance[half:] > cut) == above) == labels[half:]).mean())


def main() -> None:
  from experiments.data import pathfinder  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10_240)
  parser.add_argument("--seed", type=int, default=11)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--contour_length", type=int, default=14)
  args = parser.parse_args()
  data = pathfinder.generate(args.n, seed=args.seed, size=args.size,
                             contour_length=args.contour_length)
  images, labels = data["images"], data["labels"]
  found = markers_from_pixels(images)
  near = np.abs(found[:, :, None] - data["endpoints"][:, None]).max(-1) <= 1
  agree = (near[:, 0, 0] & near[:, 1, 1]) | (near[:, 0, 1] & near[:, 1, 0])
  joined = joined_in_ink(images, found)
  negatives = labels == 0
  print(f"{args.n} images ({args.size} px, {args.contour_length} paddles, seed {args.seed}): "
        f"markers found within 1 px {agree.mean():.4f}; joined in ink (>= {INK}): negatives "
        f"{joined[negatives].mean():.4f} of {negatives.sum()}, positives "
        f"{joined[~negatives].mean():.4f}; marker distance, held-out accuracy "
        f"{distance_accuracy(found, labels):.4f} on {len(labels) - len(labels) // 2}")


if __name__ == "__main__":
  main()
