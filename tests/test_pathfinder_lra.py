"""Tests for experiments/data/pathfinder_lra.py: LRA's released Pathfinder folders, split into
the examples LRA's TFDS pipeline puts in train, validation and test."""

import numpy as np
import pytest

from encoders.errors import ConfigError
from experiments.data import pathfinder_lra


def _write_lra_folder(root, labels):
  """A tiny folder in the layout of LRA's release: metadata/<i>.npy text lines + PNGs."""
  from PIL import Image
  images, lines = {}, {0: [], 1: []}
  for batch in range(2):
    (root / "imgs" / str(batch)).mkdir(parents=True)
  (root / "metadata").mkdir()
  for i, label in enumerate(labels):
    batch = i // 5
    path = root / "imgs" / str(batch) / f"sample_{i}.png"
    pixels = np.full((32, 32), i * 10, np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    lines[batch].append(f"imgs/{batch} sample_{i}.png {i} {label} 0.5 1 2\n")
    key = f"imgs/{batch}_sample_{i}.png_{len(lines[batch])}"  # LRA's TFDS key
    images[key] = (pixels.reshape(-1), label, path)
  for batch, text in lines.items():
    (root / "metadata" / f"{batch}.npy").write_text("".join(text))
  return images


def test_lra_folder_splits_as_tfds_orders_them(tmp_path):
  hashing = pytest.importorskip("tensorflow_datasets.core.hashing")
  labels = [1, 0, 0, 1, 1, 0, 1, 0, 0, 1]
  root = tmp_path / "curv_contour_length_14"
  examples = _write_lra_folder(root, labels)
  hasher = hashing.Hasher("hard")  # TFDS's own order of the split LRA named "hard"
  order = sorted(examples, key=hasher.hash_key)
  examples[order[1]][2].write_bytes(b"")  # an empty image (LRA drops those after slicing)
  empty = order[1]
  expected = {"train": order[:8], "validation": order[8:9], "test": order[9:]}
  for split, keys in expected.items():
    got = pathfinder_lra.load_lra_pathfinder(str(root), split, cache_dir=tmp_path / "cache")
    kept = [examples[k] for k in keys if k != empty]
    np.testing.assert_array_equal(got["inputs"], np.stack([x for x, _, _ in kept]))
    np.testing.assert_array_equal(got["labels"], [y for _, y, _ in kept])


def test_missing_or_misnamed_lra_folder_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"lra_dir: no LRA Pathfinder folder.*lra_release\.gz"
                     r".*pathfinder32/curv_contour_length_14") as error:
    pathfinder_lra.load_lra_pathfinder(str(tmp_path / "curv_baseline"), "train",
                                       cache_dir=tmp_path)
  assert "\n" not in str(error.value)
  with pytest.raises(ConfigError, match="must be one of curv_baseline"):
    pathfinder_lra.load_lra_pathfinder(str(tmp_path / "elsewhere"), "train", cache_dir=tmp_path)
