"""Tests for the Pathfinder generator (experiments/data/pathfinder.py, pathfinder_stamps.py): its
presets and errors, determinism, caching, the original's rendering (PIL stamps placed as the
original draws them), and label integrity read from the rendered pixels alone."""

import os

import numpy as np
import pytest
from scipy import ndimage

from encoders.errors import ConfigError
from experiments.data import pathfinder
from experiments.data import pathfinder_integrity as integrity
from experiments.data import pathfinder_stamps as stamps

# The original's own rates, measured on our reimplementation of its rules (its images are not
# available offline) by `python -m experiments.data.pathfinder_integrity --n 10240 --seed 11`
# (32 px, hard; markers found in the pixels): negatives whose marker centres share an
# 8-connected component of pixels >= 128 (half the brightest): 4.82% of 5,120 (positives 4.32%:
# crossings, not the contour); marker distance, a threshold fitted on one half, on the other:
# 53.24% (its self-avoiding contours end a little farther from their own start than the other
# contour's end does, so the distance leaks the label slightly).
JOINED_NEGATIVES = 0.0482
DISTANCE_ACCURACY = 0.5324


@pytest.fixture(scope="module")
def data32():
  return pathfinder.generate(pathfinder.CHUNK, seed=3)


@pytest.mark.parametrize("kwargs, field", [
    (dict(size=16), "data.pathfinder.size=16"), (dict(size=True), "data.pathfinder.size"),
    (dict(contour_length=8), "data.pathfinder.contour_length=8"),
    (dict(num_examples=0), "data.pathfinder.num_examples=0")])
def test_bad_arguments_are_one_line_errors(kwargs, field, tmp_path, monkeypatch):
  monkeypatch.setattr(pathfinder, "_chunk", lambda *a: pytest.fail("an image was drawn"))
  kwargs = {"num_examples": 4, **kwargs}
  with pytest.raises(ConfigError, match=field) as error:
    pathfinder.generate(kwargs.pop("num_examples"), seed=0, **kwargs)
  assert "\n" not in str(error.value)
  if "num_examples" not in field:
    with pytest.raises(ConfigError, match=field):
      pathfinder.load_pathfinder("train", num_train=4, num_eval=2, seed=0, cache_dir=tmp_path,
                                 **kwargs)
    assert not os.listdir(tmp_path)


def test_presets_are_lras():
  hard = stamps.preset(32, 14)
  assert (hard.paddle_length, hard.paddle_margins, hard.seed_distance, hard.continuity,
          hard.marker_radius, hard.distractors(14)) == (2, (1,), 7, 1.0, 1.5, (4, 5))
  assert stamps.preset(32, 6).distractors(6) == (2, 10)
  pathx = stamps.preset(128, 14)
  assert (pathx.paddle_length, pathx.paddle_margins, pathx.seed_distance, pathx.continuity,
          pathx.distractors(14)) == (5, (2, 3), 20, 1.8, (4, 8))


def test_marker_patches_match_the_whole_image_render():
  """A marker stamped from its class patch equals `draw_circle`'s whole-image render, at the
  border and inside."""
  p = stamps.PRESETS[32]
  patches, reach = stamps.marker_patches(p), stamps.marker_reach(p)
  y, x = np.ogrid[:64, :64]
  for row, col in [(0, 0), (1, 30), (5, 16), (16, 16), (31, 2), (12, 29)]:
    fine = (y - 2 * row) ** 2 + (x - 2 * col) ** 2 <= 3.0 ** 2
    whole = stamps._shrink(fine * 255, (32, 32))
    canvas = stamps.Canvas(1, 32, reach, padding=1, margin=1)
    stamps.stamp(canvas, canvas.image, np.array([0]), np.array([row]), np.array([col]), patches,
                 stamps.marker_class(p, np.array([row]), np.array([col])))
    np.testing.assert_array_equal(canvas.inner(canvas.image)[0], whole)


def test_images_are_the_originals_rendering(data32):
  images, ends = data32["images"], data32["endpoints"]
  assert images.dtype == np.uint8 and (images.max((1, 2)) == 255).all()
  assert len(np.unique(images)) > 100  # anti-aliased gray, not binary
  assert 0.3 < (images == 0).mean() < 0.8
  assert data32["labels"].sum() == pathfinder.CHUNK // 2
  # Markers: a bright disc (its 2x2 core) at every marker centre; the contours' lines are thin.
  core = ndimage.grey_erosion(images, size=(1, 2, 2))
  rows = np.arange(len(images))
  for k in range(2):
    assert (core[rows, ends[:, k, 0], ends[:, k, 1]] >= 150).all()
  assert np.median(core[core > 0]) < 60


def test_contours_are_dashed_and_curl(data32):
  """Solid polylines would join a positive's markers in ink; the original's 2-pixel gaps don't."""
  joined = integrity.joined_in_ink(data32["images"][:128], data32["endpoints"][:128])
  positives = data32["labels"][:128] == 1
  assert joined[positives].mean() < 0.2


def test_deterministic_and_prefix_stable(data32):
  again = pathfinder.generate(8, seed=3)
  for key in again:
    np.testing.assert_array_equal(again[key], data32[key][:8])
  assert not np.array_equal(pathfinder.generate(8, seed=4)["images"], again["images"])


def test_cached_splits_and_versioned_key(data32, tmp_path, monkeypatch):
  kwargs = dict(num_train=20, num_eval=6, seed=3, cache_dir=tmp_path, size=32)
  train = pathfinder.load_pathfinder("train", **kwargs)
  files = os.listdir(tmp_path)
  assert len(files) == 1
  monkeypatch.setattr(pathfinder, "generate", lambda *a, **k: pytest.fail("regenerated"))
  test = pathfinder.load_pathfinder("test", **kwargs)
  assert os.listdir(tmp_path) == files  # read back, not regenerated
  assert train["inputs"].shape == (20, 1024) and train["inputs"].dtype == np.uint8
  assert test["inputs"].shape == (6, 1024) and test["labels"].dtype == np.int32
  np.testing.assert_array_equal(test["inputs"], data32["images"][26:32].reshape(6, -1))
  # Another generator version never reads this file: it generates anew, into another file.
  monkeypatch.setattr(pathfinder, "_FORMAT_VERSION", pathfinder._FORMAT_VERSION + 1)
  monkeypatch.setattr(pathfinder, "generate", lambda n, **k: {
      key: value[:n] for key, value in data32.items()})
  pathfinder.load_pathfinder("test", **kwargs)
  assert len(os.listdir(tmp_path)) == 2


@pytest.mark.slow
def test_label_integrity_from_pixels():
  """From the images alone: marker-joined negatives no more often than the original's rules
  make them, and marker distance no better a predictor than under those rules."""
  data = pathfinder.generate(4096, seed=12)
  images, labels = data["images"], data["labels"]
  found = integrity.markers_from_pixels(images)
  near = np.abs(found[:, :, None] - data["endpoints"][:, None]).max(-1) <= 1
  assert ((near[:, 0, 0] & near[:, 1, 1]) | (near[:, 0, 1] & near[:, 1, 0])).mean() > 0.95
  negatives = labels == 0
  rate = integrity.joined_in_ink(images[negatives], found[negatives]).mean()
  sigma = np.sqrt(JOINED_NEGATIVES * (1 - JOINED_NEGATIVES) / negatives.sum())
  assert rate <= JOINED_NEGATIVES + 3 * sigma
  half = len(labels) - len(labels) // 2
  assert integrity.distance_accuracy(found, labels) <= DISTANCE_ACCURACY + 3 * np.sqrt(
      0.25 / half)


@pytest.mark.slow
def test_pathx_and_prefix_across_chunks():
  pathx = pathfinder.generate(4, seed=0, size=128)
  assert pathx["images"].shape == (4, 128, 128) and (pathx["images"].max((1, 2)) == 255).all()
  more = pathfinder.generate(pathfinder.CHUNK + 4, seed=2)
  np.testing.assert_array_equal(more["images"][:8], pathfinder.generate(8, seed=2)["images"])
  assert not np.array_equal(more["images"][pathfinder.CHUNK:], more["images"][:4])
