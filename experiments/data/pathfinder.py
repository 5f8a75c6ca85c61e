"""Pathfinder: a seeded, vectorised generator, and a reader for LRA's released image folders.

References:
  * Linsley et al. 2018, "Learning long-range spatial dependencies with horizontal gated
    recurrent units", NeurIPS (the Pathfinder challenge).
  * Kim, Linsley et al. 2020, "Disentangling neural mechanisms for perceptual grouping", ICLR
    (the generator LRA used; its settings are in LRA's `lra_benchmarks/data/pathfinder.py`).
  * Tay et al. 2021, "Long Range Arena", ICLR: Pathfinder at 32x32 (1,024 pixel tokens) and
    Path-X at 128x128 (16,384 tokens), the hardest setting `curv_contour_length_14`.

Task. An image holds two long dashed contours, a few short dashed distractor contours and two
round markers. Label 1: both markers sit on the two ends of one contour; label 0: one marker
ends each of the two long contours. Both long contours are drawn in every image; only where
the markers go differs, so the label is a matter of tracing a contour from end to end.

Our generator (not the pixel-exact original: no anti-aliasing, 1-pixel lines) follows the
original's geometry, with lengths given for a 32-pixel image and scaled by `size / 32`:
  * a contour is `contour_length` dashes ("paddles") of `dash_length` pixels separated by
    gaps of `gap_length` (LRA's Pathfinder-32 hard: 14 paddles of length 2, margin 1);
  * it is a smooth walk: its heading turns by a uniform draw in [-max_turn, max_turn] per
    dash, spread evenly along the dash, sampled every half pixel (so the undashed contour
    is 8-connected once rounded to pixels), and mirrored at the image border (a reflection
    keeps the walk continuous and every point, both ends included, inside the image);
  * the two long contours never touch (no pixel of one is within one pixel of the other,
    8-neighbourhood); a pair that does is redrawn;
  * `num_distractors` contours of `distractor_length` dashes (LRA: 14 // 3 = 4 dashes, 20 // 4
    = 5 snakes at 32 pixels) that touch a long contour are redrawn (a few rounds, then left
    out), so no chain of touching contours joins the two long ones;
  * markers are discs of radius `marker_radius` (LRA: 1.5) centred on the contour ends.
So the label equals the 8-connectivity of the two marker centres on the union of the undashed
contours (`contour_masks`), which tests/test_pathfinder.py checks with scipy's labelling.

Determinism and speed: images come in chunks of CHUNK; chunk c is a pure function of (seed, c)
through `np.random.default_rng([seed, c])`, so `generate(n)` is a prefix of `generate(m > n)`.
Each chunk's labels are an exact half/half permutation. Every step is a numpy array operation
over the chunk (walks via cumulative sums, rasterisation via flat-index scatter, touching via
a 3x3 dilation and a gather): 2,048 32x32 images in 0.6 s, 512 128x128 in 0.5 s on one
core of the 2-core machine of docs/benchmarks.md.

`load_pathfinder` caches all three splits in one `.npz` (experiments/data/npz_cache.py), as
ListOps does; `load_lra_pathfinder` reads LRA's released folder
(`lra_release/pathfinder32/curv_contour_length_14`: `metadata/<i>.npy`, text files of lines
`imgs/<i> sample_<j>.png <k> <label> ...`, and the PNGs), split 80/10/10 in the metadata order
as LRA's `train[:80%]`, `[80%:90%]`, `[90%:]`, and caches the decoded pixels the same way.
Both return `{"inputs": uint8 [N, size * size] (row-major pixels), "labels": int32 [N]}`.
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import logging

from encoders.errors import ConfigError
from experiments.data import lra_release, npz_cache

SPLITS = ("train", "validation", "test")
NUM_CLASSES = 2
CHUNK = 512  # images per independently seeded chunk
STEP = 0.5  # pixels between consecutive samples of a walk (<= 0.5 keeps it 8-connected)
INK = 255  # value of contour and marker pixels (background 0)
_FORMAT_VERSION = 1  # bump when the generator's output for given args changes
_MAX_PAIR_ROUNDS = 200  # redraws of touching long-contour pairs before giving up
_DISTRACTOR_ROUNDS = 5  # redraws of a distractor touching a long contour before leaving it out
# LRA's Pathfinder-32 hard setting (Kim et al. 2020's generator arguments in LRA's TFDS
# builder); lengths in pixels of a 32-pixel image, scaled by size / 32.
_DEFAULTS = dict(size=32, contour_length=14, dash_length=2.0, gap_length=1.0,
                 distractor_length=4, num_distractors=5, marker_radius=1.5,
                 max_turn=math.pi / 6)


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"data.pathfinder.{name}={value!r}; must be an int >= {minimum}")
  return int(value)


def _check_float(name: str, value, minimum: float) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
    raise ConfigError(f"data.pathfinder.{name}={value!r}; must be a number >= {minimum}")
  return float(value)


def _geometry(size, contour_length, dash_length, gap_length, distractor_length,
              num_distractors, marker_radius, max_turn) -> dict:
  """Validated generation arguments (the cache key); lengths still in 32-pixel units."""
  return dict(
      size=_check_int("size", size, 16),
      contour_length=_check_int("contour_length", contour_length, 1),
      dash_length=_check_float("dash_length", dash_length, STEP),
      gap_length=_check_float("gap_length", gap_length, 0.0),
      distractor_length=_check_int("distractor_length", distractor_length, 1),
      num_distractors=_check_int("num_distractors", num_distractors, 0),
      marker_radius=_check_float("marker_radius", marker_radius, 0.0),
      max_turn=_check_float("max_turn", max_turn, 0.0))


# ----------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------
def _reflect(x: np.ndarray, low: float, high: float) -> np.ndarray:
  """Mirrors x into [low, high] (a triangle wave: continuous, distances never grow)."""
  span = high - low
  y = np.mod(x - low, 2 * span)
  return low + np.where(y > span, 2 * span - y, y)


def _walks(rng: np.random.Generator, shape: tuple[int, ...], num_dashes: int, g: dict
           ) -> tuple[np.ndarray, np.ndarray]:
  """Smooth dashed walks: (integer pixels [*shape, samples, 2] as (row, col), drawn [samples])."""
  scale = g["size"] / 32
  dash, gap = g["dash_length"] * scale, g["gap_length"] * scale
  arc = num_dashes * dash + (num_dashes - 1) * gap
  s = np.minimum(np.arange(int(math.ceil(arc / STEP)) + 1) * STEP, arc)  # arc position
  period = dash + gap
  drawn = np.mod(s, period) <= dash
  low, high = 1.0, g["size"] - 2.0  # one pixel of padding, as LRA's `padding = 1`
  start = rng.uniform(low, high, shape + (2,))
  heading = rng.uniform(0, 2 * np.pi, shape)
  turns = rng.uniform(-g["max_turn"], g["max_turn"], shape + (num_dashes,))
  total = np.concatenate([np.zeros(shape + (1,)), np.cumsum(turns, -1)], -1)
  # The heading turns linearly along each period, from total[i] to total[i + 1].
  where = np.minimum(s / period, num_dashes - 1e-9)
  index = where.astype(int)
  frac = where - index
  angle = heading[..., None] + total[..., index] * (1 - frac) + total[..., index + 1] * frac
  steps = np.stack([np.sin(angle), np.cos(angle)], -1) * STEP
  steps[..., 0, :] = 0.0
  points = _reflect(start[..., None, :] + np.cumsum(steps, -2), low, high)
  return np.rint(points).astype(np.int64), drawn


def _scatter(masks: np.ndarray, points: np.ndarray, rows: np.ndarray | None = None) -> None:
  """Sets masks[rows[i], row, col] for every point of points[i] ([m, ..., 2], in bounds);
  rows default to 0..m-1."""
  size = masks.shape[1]
  rows = np.arange(points.shape[0]) if rows is None else rows
  image = rows.reshape((points.shape[0],) + (1,) * (points.ndim - 2))
  masks.reshape(-1)[(image * size + points[..., 0]) * size + points[..., 1]] = True


def _dilate(masks: np.ndarray) -> np.ndarray:
  """3x3 binary dilation of [n, size, size] (a pixel and its 8 neighbours)."""
  padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
  out = np.zeros_like(masks)
  size = masks.shape[1]
  for dr in range(3):
    for dc in range(3):
      out |= padded[:, dr:dr + size, dc:dc + size]
  return out


def _gather(masks: np.ndarray, points: np.ndarray) -> np.ndarray:
  """masks[i, row, col] at points [n, ..., 2] -> bool [n, ...]."""
  image = np.arange(masks.shape[0]).reshape((masks.shape[0],) + (1,) * (points.ndim - 2))
  return masks[image, points[..., 0], points[..., 1]]


def _long_pairs(rng, n: int, g: dict) -> tuple[np.ndarray, np.ndarray]:
  """n pairs of non-touching long contours: (pixels [n, 2, samples, 2], drawn [samples])."""
  size = g["size"]
  out = None
  pending = np.arange(n)
  for _ in range(_MAX_PAIR_ROUNDS):
    points, drawn = _walks(rng, (len(pending), 2), g["contour_length"], g)
    first = np.zeros((len(pending), size, size), bool)
    _scatter(first, points[:, 0])
    touching = _gather(_dilate(first), points[:, 1]).any(-1)
    if out is None:
      out = np.empty((n,) + points.shape[1:], points.dtype)
    out[pending[~touching]] = points[~touching]
    pending = pending[touching]
    if not len(pending):
      return out, drawn
  raise ConfigError(
      f"data.pathfinder: two contours of {g['contour_length']} dashes almost always touch in "
      f"a {size}x{size} image; lower contour_length or dash_length")


def _distractors(rng, long_masks: np.ndarray, g: dict
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Distractor walks (pixels [n, D, samples, 2], drawn [samples]) and which are kept [n, D]:
  redrawn while they touch a long contour, left out after _DISTRACTOR_ROUNDS."""
  n, num = long_masks.shape[0], g["num_distractors"]
  near = _dilate(long_masks)
  points, drawn = _walks(rng, (n, num), g["distractor_length"], g)
  bad = _gather(near, points).any(-1)
  for _ in range(_DISTRACTOR_ROUNDS):
    rows, cols = np.nonzero(bad)
    if not len(rows):
      break
    fresh, _ = _walks(rng, (len(rows),), g["distractor_length"], g)
    points[rows, cols] = fresh
    bad[rows, cols] = near[rows[:, None], fresh[..., 0], fresh[..., 1]].any(-1)
  return points, drawn, ~bad


def _disc_offsets(radius: float) -> np.ndarray:
  r = int(math.floor(radius))
  grid = np.stack(np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij"), -1)
  return grid[(grid ** 2).sum(-1) <= radius ** 2]


def _chunk(seed: int, index: int, g: dict) -> dict[str, np.ndarray]:
  """CHUNK images from rng([seed, index]): images, labels, endpoints, contour masks."""
  rng = np.random.default_rng([seed, index])
  n, size = CHUNK, g["size"]
  labels = (rng.permutation(n) % 2).astype(np.int32)
  long_points, long_drawn = _long_pairs(rng, n, g)  # [n, 2, S, 2], [S]
  solid = np.zeros((n, size, size), bool)
  _scatter(solid, long_points)
  distractors, distractor_drawn, kept = _distractors(rng, solid, g)
  rows = np.nonzero(kept)[0]
  _scatter(solid, distractors[kept], rows)
  images = np.zeros((n, size, size), bool)
  _scatter(images, long_points[:, :, long_drawn])
  _scatter(images, distractors[kept][:, distractor_drawn], rows)
  first = long_points[:, 0, 0]  # one end of contour 0
  other = np.where(labels[:, None] == 1, long_points[:, 0, -1], long_points[:, 1, -1])
  endpoints = np.stack([first, other], 1)  # [n, 2, 2] marker centres (row, col)
  discs = endpoints[:, :, None, :] + _disc_offsets(g["marker_radius"] * size / 32)
  discs = np.clip(discs, 0, size - 1)
  _scatter(images, discs)
  return {"images": images.astype(np.uint8) * INK, "labels": labels, "endpoints": endpoints,
          "contour_masks": solid}


def generate(num_examples: int, *, seed: int, **geometry) -> dict[str, np.ndarray]:
  """`num_examples` Pathfinder images, deterministically (see the module docstring).
  `geometry`: size, contour_length, dash_length, gap_length, distractor_length,
  num_distractors, marker_radius, max_turn (defaults: LRA's Pathfinder-32 hard setting).

  Returns {"images": uint8 [N, size, size] (0 or INK), "labels": int32 [N] (1 = the markers
  end one contour), "endpoints": int [N, 2, 2] (marker centres, (row, col)),
  "contour_masks": bool [N, size, size] (every contour undashed, markers excluded)}.
  """
  num_examples = _check_int("num_examples", num_examples, 1)
  seed = _check_int("seed", seed, 0)
  g = _geometry(**{**_DEFAULTS, **geometry})
  chunks = [_chunk(seed, c, g) for c in range(-(-num_examples // CHUNK))]
  return {k: np.concatenate([c[k] for c in chunks])[:num_examples] for k in chunks[0]}


# ----------------------------------------------------------------------------
# Cached splits.
# ----------------------------------------------------------------------------
def _split_bounds(num_train: int, num_eval: int) -> dict[str, tuple[int, int]]:
  return {"train": (0, num_train), "validation": (num_train, num_train + num_eval),
          "test": (num_train + num_eval, num_train + 2 * num_eval)}


def load_pathfinder(split: str, *, num_train: int, num_eval: int, seed: int,
                    cache_dir: str | os.PathLike, **geometry) -> dict[str, np.ndarray]:
  """One split of a generated, cached Pathfinder set: the first `num_train` images are train,
  the next `num_eval` validation, the next `num_eval` test. `geometry`: `generate`'s keyword
  arguments (size, contour_length, ...). Returns {"inputs": uint8 [N, size * size],
  "labels": int32 [N]}."""
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  num_train = _check_int("num_train", num_train, 1)
  num_eval = _check_int("num_eval", num_eval, 1)
  seed = _check_int("seed", seed, 0)
  args = dict(format_version=_FORMAT_VERSION, num_train=num_train, num_eval=num_eval,
              seed=seed, **_geometry(**{**_DEFAULTS, **geometry}))
  path, args_json = npz_cache.path_for(cache_dir, "pathfinder", args)
  cached = npz_cache.read(path, args_json, "Pathfinder")
  if cached is None:
    logging.info("Pathfinder: generating %d images (%s) into %s", num_train + 2 * num_eval,
                 args_json, path)
    data = generate(num_train + 2 * num_eval, seed=seed, **geometry)
    flat = data["images"].reshape(len(data["images"]), -1)
    cached = {}
    for name, (lo, hi) in _split_bounds(num_train, num_eval).items():
      cached[f"{name}_inputs"], cached[f"{name}_labels"] = flat[lo:hi], data["labels"][lo:hi]
    npz_cache.write(path, args_json, cached, "Pathfinder")
  return {"inputs": cached[f"{split}_inputs"], "labels": cached[f"{split}_labels"]}


# ----------------------------------------------------------------------------
# LRA's released folders.
# ----------------------------------------------------------------------------
def _missing(directory: str, what: str) -> ConfigError:
  return ConfigError(
      f"data.pathfinder.lra_dir: {what} at '{directory}'; {lra_release.HOW_TO_GET} "
      "and point lra_dir to lra_release/pathfinder32/"
      "curv_contour_length_14 (Path-X: lra_release/pathfinder128/curv_contour_length_14)")


def read_lra_metadata(directory: str) -> list[tuple[str, int]]:
  """(image path, label) of every line of `directory/metadata/*.npy` (text files despite the
  suffix), files in numeric order of their stem, lines in file order."""
  meta_dir = os.path.join(directory, "metadata")
  if not os.path.isdir(meta_dir):
    raise _missing(directory, "no LRA Pathfinder folder (metadata/ and imgs/)")
  names = sorted((f for f in os.listdir(meta_dir) if f.endswith(".npy")),
                 key=lambda f: (len(f), f))
  if not names:
    raise _missing(directory, "no metadata/*.npy files")
  examples = []
  for name in names:
    with open(os.path.join(meta_dir, name), encoding="utf-8") as f:
      for line in f:
        fields = line.split()
        if len(fields) >= 4:
          examples.append((os.path.join(directory, fields[0], fields[1]), int(fields[3])))
  return examples


def _read_png(path: str) -> np.ndarray | None:
  """Grayscale pixels of a PNG, or None for an empty file (LRA filters those out)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel  (only for LRA's folders)
  if os.path.getsize(path) == 0:
    return None
  with Image.open(path) as image:
    return np.asarray(image.convert("L"), np.uint8)


def load_lra_pathfinder(directory: str, split: str, *,
                        cache_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """One split (80/10/10 in metadata order) of LRA's released Pathfinder folder, decoded once
  and cached. Returns {"inputs": uint8 [N, H * W], "labels": int32 [N]}."""
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  directory = os.path.abspath(os.fspath(directory))
  examples = read_lra_metadata(directory)
  args = dict(format_version=_FORMAT_VERSION, lra_dir=directory, num_lines=len(examples))
  path, args_json = npz_cache.path_for(cache_dir, "pathfinder_lra", args)
  cached = npz_cache.read(path, args_json, "Pathfinder")
  if cached is None:
    images, labels = [], []
    for image_path, label in examples:
      if not os.path.exists(image_path):
        raise _missing(directory, f"metadata names a missing image {image_path!r}")
      pixels = _read_png(image_path)
      if pixels is not None:
        images.append(pixels.reshape(-1))
        labels.append(label)
    if len({len(x) for x in images}) > 1:
      raise ConfigError(f"data.pathfinder.lra_dir: images of different sizes in '{directory}'")
    inputs, labels = np.stack(images), np.asarray(labels, np.int32)
    n = len(labels)
    cached = {}
    for name, (lo, hi) in {"train": (0, n * 8 // 10), "validation": (n * 8 // 10, n * 9 // 10),
                           "test": (n * 9 // 10, n)}.items():
      cached[f"{name}_inputs"], cached[f"{name}_labels"] = inputs[lo:hi], labels[lo:hi]
    npz_cache.write(path, args_json, cached, "Pathfinder")
  return {"inputs": cached[f"{split}_inputs"], "labels": cached[f"{split}_labels"]}
