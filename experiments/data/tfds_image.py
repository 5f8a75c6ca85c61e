"""Grayscale images from TFDS as rows of pixel values, read without TensorFlow (LRA's image
task: CIFAR-10, Tay et al. 2021).

Each image becomes its row-major grayscale pixels, uint8 [H * W] (CIFAR-10: 1,024), as LRA's
`tf.image.rgb_to_grayscale` on uint8 images computes them: float32 channels v / 255, weighted
0.2989 R + 0.5870 G + 0.1140 B, back to uint8 by TF's `convert_image_dtype` (times 255.5,
truncated).
Datasets are read with `tfds.data_source` (experiments/data/tfds_text.py), which never
downloads: prepare once with `tfds build cifar10 --file_format=array_record`.
"""

from __future__ import annotations

import numpy as np

from encoders.errors import ConfigError
from experiments.data.tfds_text import data_source

GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def grayscale(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] or [H, W, 1] -> uint8 [H, W]."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 3:
    gray = (image.astype(np.float32) * np.float32(1 / 255)) @ GRAY_WEIGHTS
    return (gray * np.float32(255.5)).astype(np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    return image[..., 0].astype(np.uint8)
  if image.ndim == 2:
    return image.astype(np.uint8)
  raise ConfigError(f"data.image: images of shape {image.shape}; expected [H, W, 1 or 3]")


def load_tfds_images(name: str, *, split: str, data_dir: str | None = None,
                     image_key: str = "image", label_key: str = "label",
                     max_examples: int | None = None) -> dict[str, np.ndarray]:
  """{"inputs": uint8 [N, H * W] grayscale pixels, "labels": int32 [N]} of a TFDS split."""
  source = data_source(name, split, data_dir)
  num = len(source) if max_examples is None else min(len(source), max_examples)
  if num == 0:
    raise ConfigError(f"data.image: split {split!r} of {name!r} is empty")
  rows, labels = [], np.empty((num,), np.int32)
  for i in range(num):
    example = source[i]
    if image_key not in example:
      raise ConfigError(f"data.image: {name!r} has no feature {image_key!r}; features: "
                        f"{sorted(example)}")
    rows.append(grayscale(example[image_key]).reshape(-1))
    labels[i] = int(np.asarray(example[label_key]))
  return {"inputs": np.stack(rows), "labels": labels}
