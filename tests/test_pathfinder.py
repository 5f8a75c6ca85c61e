"""Tests for experiments/data/pathfinder.py: the generator's labels are checked against an
independent connectivity labelling (scipy.ndimage) of the contours it drew."""

import os

import numpy as np
import pytest
from scipy import ndimage

from encoders.errors import ConfigError
from experiments.data import pathfinder

EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def data32():
  return pathfinder.generate(pathfinder.CHUNK, seed=3)


@pytest.mark.parametrize("size", [32, 64])
def test_label_is_endpoint_connectivity(size, data32):
  data = data32 if size == 32 else pathfinder.generate(64, seed=5, size=size)
  for mask, (a, b), label in zip(data["contour_masks"], data["endpoints"], data["labels"]):
    components, _ = ndimage.label(mask, structure=EIGHT)
    assert components[tuple(a)] > 0 and components[tuple(b)] > 0  # markers end contours
    assert (components[tuple(a)] == components[tuple(b)]) == bool(label)


def test_ink_is_contours_and_markers(data32):
  images, masks = data32["images"], data32["contour_masks"]
  assert images.dtype == np.uint8 and set(np.unique(images)) == {0, pathfinder.INK}
  rows, cols = np.mgrid[:32, :32]
  for image, mask, ends in zip(images[:64], masks[:64], data32["endpoints"][:64]):
    near_marker = np.zeros_like(mask)
    for r, c in ends:
      near_marker |= (rows - r) ** 2 + (cols - c) ** 2 <= 1.5 ** 2
    assert not ((image > 0) & ~mask & ~near_marker).any()
    assert (image > 0).sum() < mask.sum() + near_marker.sum()  # dashed: gaps left out


def test_endpoints_inside_and_classes_balanced(data32):
  ends = data32["endpoints"]
  assert ends.min() >= 1 and ends.max() <= 30  # one pixel of padding
  assert data32["labels"].sum() == pathfinder.CHUNK // 2
  assert not (ends[:, 0] == ends[:, 1]).all(-1).any()


def test_deterministic_and_prefix_stable(data32):
  again = pathfinder.generate(pathfinder.CHUNK + 10, seed=3)
  for key in data32:
    np.testing.assert_array_equal(again[key][:pathfinder.CHUNK], data32[key])
  other = pathfinder.generate(8, seed=4)
  assert not np.array_equal(other["images"], data32["images"][:8])


def test_cached_splits(tmp_path):
  kwargs = dict(num_train=20, num_eval=6, seed=1, cache_dir=tmp_path, size=32)
  train = pathfinder.load_pathfinder("train", **kwargs)
  files = os.listdir(tmp_path)
  assert len(files) == 1
  test = pathfinder.load_pathfinder("test", **kwargs)
  assert os.listdir(tmp_path) == files  # read back, not regenerated
  assert train["inputs"].shape == (20, 1024) and train["inputs"].dtype == np.uint8
  assert test["inputs"].shape == (6, 1024) and test["labels"].dtype == np.int32
  full = pathfinder.generate(32, seed=1)
  np.testing.assert_array_equal(test["inputs"], full["images"][26:32].reshape(6, -1))
  with pytest.raises(ConfigError, match="data.pathfinder.contour_length"):
    pathfinder.load_pathfinder("train", **{**kwargs, "contour_length": 0})


def _write_lra_folder(root, labels):
  """A tiny folder in the layout of LRA's release: metadata/<i>.npy text lines + PNGs."""
  from PIL import Image
  images = []
  for batch in range(2):
    (root / "imgs" / str(batch)).mkdir(parents=True)
  (root / "metadata").mkdir()
  lines = {0: [], 1: []}
  for i, label in enumerate(labels):
    batch = i // 5
    pixels = np.full((32, 32), i * 10, np.uint8)
    Image.fromarray(pixels, mode="L").save(root / "imgs" / str(batch) / f"sample_{i}.png")
    lines[batch].append(f"imgs/{batch} sample_{i}.png {i} {label} 0.5 1 2\n")
    images.append(pixels.reshape(-1))
  for batch, text in lines.items():
    (root / "metadata" / f"{batch}.npy").write_text("".join(text))
  return np.stack(images)


def test_lra_folder_reader(tmp_path):
  labels = [1, 0, 0, 1, 1, 0, 1, 0, 0, 1]
  images = _write_lra_folder(tmp_path / "curv_contour_length_14", labels)
  root = str(tmp_path / "curv_contour_length_14")
  train = pathfinder.load_lra_pathfinder(root, "train", cache_dir=tmp_path / "cache")
  val = pathfinder.load_lra_pathfinder(root, "validation", cache_dir=tmp_path / "cache")
  test = pathfinder.load_lra_pathfinder(root, "test", cache_dir=tmp_path / "cache")
  np.testing.assert_array_equal(train["inputs"], images[:8])
  np.testing.assert_array_equal(train["labels"], labels[:8])
  np.testing.assert_array_equal(val["inputs"], images[8:9])
  np.testing.assert_array_equal(test["labels"], labels[9:])


def test_missing_lra_folder_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"lra_dir: no LRA Pathfinder folder.*lra_release\.gz"
                     r".*pathfinder32/curv_contour_length_14") as error:
    pathfinder.load_lra_pathfinder(str(tmp_path / "nothing"), "train", cache_dir=tmp_path)
  assert "\n" not in str(error.value)
