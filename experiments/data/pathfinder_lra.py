"""LRA's released Pathfinder / Path-X folders (Tay et al. 2021), split as LRA's code splits them.

A folder (`lra_release/pathfinder32/curv_contour_length_14`, ...) holds `metadata/<i>.npy` (text
files despite the suffix: lines `imgs/<i> sample_<j>.png <k> <label> ...`) and the PNGs. LRA's
TFDS builder (`lra_benchmarks/data/pathfinder.py`) names each example
`<imgs dir>_<png>_<n>` (n: the line's number in its metadata file, from 1) in the split named
after the folder (curv_baseline: easy, curv_contour_length_9: intermediate,
curv_contour_length_14: hard); TFDS stores a split's examples sorted by the md5 of split name +
key (tfds.core.hashing), and LRA's input pipeline (`lra_benchmarks/image/input_pipeline.py`)
takes `[:80%]`, `[80%:90%]`, `[90%:]` of that order (boundaries rounded to the closest example)
and then drops empty images. We rebuild that order, so train, validation and test hold the
examples LRA's held. Returns `{"inputs": uint8 [N, H * W], "labels": int32 [N]}`, cached.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from encoders.errors import ConfigError
from experiments.data import lra_release, npz_cache

SPLITS = ("train", "validation", "test")
TFDS_SPLITS = {"curv_baseline": "easy", "curv_contour_length_9": "intermediate",
               "curv_contour_length_14": "hard"}
_FORMAT_VERSION = 2  # 1: metadata order, empties dropped before splitting


def _missing(directory: str, what: str) -> ConfigError:
  return ConfigError(
      f"data.pathfinder.lra_dir: {what} at '{directory}'; {lra_release.HOW_TO_GET} "
      "and point lra_dir to lra_release/pathfinder32/"
      "curv_contour_length_14 (Path-X: lra_release/pathfinder128/curv_contour_length_14)")


def read_lra_metadata(directory: str) -> list[tuple[str, str, int]]:
  """(image path, LRA's TFDS key, label) of every line of `directory/metadata/*.npy`, files
  in numeric order of their stem, lines in file order."""
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
      lines = f.read().split("\n")[:-1]  # as LRA's builder reads them
    for number, line in enumerate(lines, 1):
      fields = line.split(" ")
      if len(fields) >= 4:
        key = "_".join([fields[0], fields[1], str(number)])
        examples.append((os.path.join(directory, fields[0], fields[1]), key, int(fields[3])))
  return examples


def tfds_order(keys: list[str], split_name: str) -> np.ndarray:
  """Indices of `keys` in TFDS's stored order: ascending md5(split name + key)."""
  salt = hashlib.md5(split_name.encode("utf-8"))

  def digest(key: str) -> int:
    md5 = salt.copy()
    md5.update(key.encode("utf-8"))
    return int(md5.hexdigest(), 16)

  return np.asarray(sorted(range(len(keys)), key=lambda i: digest(keys[i])), np.int64)


def _read_png(path: str) -> np.ndarray | None:
  """Grayscale pixels of a PNG, or None for an empty file (LRA filters those out)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel  (only for LRA's folders)
  if os.path.getsize(path) == 0:
    return None
  with Image.open(path) as image:
    return np.asarray(image.convert("L"), np.uint8)


def load_lra_pathfinder(directory: str, split: str, *,
                        cache_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """One split of LRA's released Pathfinder folder (see the module docstring), decoded once
  and cached."""
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  directory = os.path.abspath(os.fspath(directory))
  tfds_split = TFDS_SPLITS.get(os.path.basename(directory))
  if tfds_split is None:
    raise ConfigError(f"data.pathfinder.lra_dir='{directory}': LRA's splits are named after "
                      f"its folders; the folder must be one of {', '.join(TFDS_SPLITS)}")
  examples = read_lra_metadata(directory)
  args = dict(format_version=_FORMAT_VERSION, lra_dir=directory, num_lines=len(examples))
  path, args_json = npz_cache.path_for(cache_dir, "pathfinder_lra", args)
  cached = npz_cache.read(path, args_json, "Pathfinder")
  if cached is None:
    order = tfds_order([key for _, key, _ in examples], tfds_split)
    n = len(order)
    bounds = {"train": (0, round(n * 0.8)), "validation": (round(n * 0.8), round(n * 0.9)),
              "test": (round(n * 0.9), n)}
    cached, size = {}, None
    for name, (lo, hi) in bounds.items():
      images, labels = [], []
      for i in order[lo:hi]:
        image_path, _, label = examples[i]
        if not os.path.exists(image_path):
          raise _missing(directory, f"metadata names a missing image {image_path!r}")
        pixels = _read_png(image_path)
        if pixels is None:
          continue
        if size not in (None, pixels.size):
          raise ConfigError(f"data.pathfinder.lra_dir: images of different sizes in "
                            f"'{directory}'")
        size = pixels.size
        images.append(pixels.reshape(-1))
        labels.append(label)
      cached[f"{name}_inputs"] = np.stack(images) if images else np.zeros((0, size or 0),
                                                                          np.uint8)
      cached[f"{name}_labels"] = np.asarray(labels, np.int32)
    npz_cache.write(path, args_json, cached, "Pathfinder")
  return {"inputs": cached[f"{split}_inputs"], "labels": cached[f"{split}_labels"]}
