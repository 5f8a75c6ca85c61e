"""Pathfinder's settings and pixels: LRA's presets, pre-rendered paddle and marker stamps, and
the canvases the generator (experiments/data/pathfinder.py) stamps them into.

The original generator (Kim, Linsley et al. 2020, "Disentangling neural mechanisms for
perceptual grouping", ICLR; drewlinsley/pathfinder, `snakes.py` + `snakes2.py`, run by
`snakes2_wrapper.py`) draws every paddle and marker with PIL at `antialias_scale` times the
image size, then shrinks it with Lanczos (`scipy.misc.imresize`: min-max scaled to uint8, then
PIL's LANCZOS resize). A paddle's pixels depend only on its orientation and margin, a marker's
only on where it sits relative to the border, so we render each distinct one once, with PIL
exactly as the original does, and the generator (experiments/data/pathfinder.py) stamps them:
  * a paddle of `paddle_length` L drawn from its start pixel along an orientation, width
    round(thickness * aa) at the fine scale, on a (2 (L + ceil(thickness) + margin) + 1)^2 patch
    centred on the start (`draw_line_n_mask`); its occupancy mask is the fine line dilated by
    a disc of radius margin * aa, shrunk the same way;
  * seed orientations are whole degrees in [-180, 180); an extension's orientation is the
    direction from its pivot to an integer pixel on the ring of radius L + margin, and it is
    drawn from that pixel back towards the pivot (orientation + pi);
  * a seed's head-centric "struct" (where a paddle could start without touching the mask) is
    its mask patch placed at (L + margin + 1, L + margin + 1) of a (2 (L + margin) + 1)^2
    kernel, its fully-covered pixels (value 1.0) taken (`seed_snake`'s `cv2.dilate`);
  * a marker is a disc of radius `marker_radius` at aa times the resolution over the whole
    image (`draw_circle`), shrunk to the image size.

PRESETS are the settings LRA's TFDS builders state (google-research/long-range-arena,
`lra_benchmarks/data/pathfinder.py`: Pathfinder32, 64, 128, 256) over the wrapper script's
defaults (paddle_length 5, paddle_contrast_list [1.], padding 22, seed_distance 27,
max_paddle_retrial 2, max_distractor_contour_retrial 4, use_single_paddles False). Python 2's
integer division gives the 64/128/256 presets' distractor counts (35 / (14 / 3) = 8 at 128).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from encoders.errors import ConfigError

# Difficulty: contour length -> LRA's folder (easy, intermediate, hard).
CONTOUR_LENGTHS = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}


@dataclasses.dataclass(frozen=True)
class Preset:
  """One of LRA's Pathfinder resolutions (argument names as the original's `Args`)."""
  name: str
  size: int  # window_size
  padding: int  # occupied border of the mask
  paddle_length: int
  paddle_thickness: float
  paddle_margins: tuple[int, ...]  # paddle_margin_list: one drawn per image
  antialias_scale: int
  seed_distance: int  # pixels between the two long contours' first paddles
  marker_radius: float
  continuity: float  # turn weights cos^2(min(continuity * turn, pi / 2))
  distractor_budget: int  # num_distractor_snakes = budget // distractor_length
  snake_contrast: float
  paddle_contrast: float  # long contours: paddle_contrast * snake_contrast; distractors: snake
  max_paddle_retrial: int = 2
  max_distractor_contour_retrial: int = 4

  def distractors(self, contour_length: int) -> tuple[int, int]:
    """(paddles per distractor, number of distractors) for a contour length."""
    length = contour_length // 3
    return length, self.distractor_budget // length


PRESETS = {
    32: Preset("pathfinder32", 32, padding=1, paddle_length=2, paddle_thickness=0.5,
               paddle_margins=(1,), antialias_scale=2, seed_distance=7, marker_radius=1.5,
               continuity=1.0, distractor_budget=20, snake_contrast=2.0, paddle_contrast=0.75),
    64: Preset("pathfinder64", 64, padding=1, paddle_length=5, paddle_thickness=1.0,
               paddle_margins=(1,), antialias_scale=2, seed_distance=12, marker_radius=2.5,
               continuity=1.8, distractor_budget=22, snake_contrast=0.8, paddle_contrast=1.0),
    128: Preset("pathfinder128", 128, padding=1, paddle_length=5, paddle_thickness=1.5,
                paddle_margins=(2, 3), antialias_scale=2, seed_distance=20, marker_radius=3.0,
                continuity=1.8, distractor_budget=35, snake_contrast=0.9, paddle_contrast=1.0),
    256: Preset("pathfinder256", 256, padding=22, paddle_length=5, paddle_thickness=2.0,
                paddle_margins=(3,), antialias_scale=2, seed_distance=27, marker_radius=5.0,
                continuity=1.8, distractor_budget=30, snake_contrast=1.0, paddle_contrast=1.0),
}


def preset(size, contour_length) -> Preset:
  """The preset for an image size and contour length, or a one-line ConfigError."""
  if isinstance(size, bool) or size not in PRESETS:
    raise ConfigError(f"data.pathfinder.size={size!r}; LRA's generator settings exist for "
                      f"{', '.join(map(str, PRESETS))} pixels")
  if isinstance(contour_length, bool) or contour_length not in CONTOUR_LENGTHS:
    raise ConfigError(f"data.pathfinder.contour_length={contour_length!r}; LRA's difficulties "
                      f"are {', '.join(f'{k} ({v})' for k, v in CONTOUR_LENGTHS.items())}")
  return PRESETS[size]


def translate(y, x, angle, dist):
  """The original's `translate_coord`: the ceiling of (y, x) moved `dist` along `angle`."""
  return (np.ceil(y + float(dist) * np.sin(angle)).astype(np.int64),
          np.ceil(x + float(dist) * np.cos(angle)).astype(np.int64))


def flip(angle):
  """The original's `flip_by_pi`: the opposite orientation, kept in [-pi, pi]."""
  return np.where(angle < 0, angle + np.pi, angle - np.pi)


def _shrink(fine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """`scipy.misc.imresize(x, shape, interp='lanczos') / 255` of a 0/255 image."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  image = Image.fromarray(np.asarray(fine, np.uint8), "L")
  return np.asarray(image.resize((shape[1], shape[0]), Image.LANCZOS), np.float32) / 255


def _disc(radius: float) -> np.ndarray:
  r = int(math.floor(radius))
  y, x = np.ogrid[-r:r + 1, -r:r + 1]
  return x ** 2 + y ** 2 <= radius ** 2


@dataclasses.dataclass(frozen=True)
class Sparse:
  """The nonzero pixels of a table of centred patches [K, s, s]: offsets from the centre (u, v)
  and values, [K, W]; shorter rows repeat their first entry (a repeat writes the same value)."""
  u: np.ndarray
  v: np.ndarray
  values: np.ndarray


def sparse(table: np.ndarray) -> Sparse:
  k, s = table.shape[0], table.shape[-1]
  flat = table.reshape(k, -1)
  nonzero = [np.flatnonzero(row) for row in flat]
  index = np.zeros((k, max(1, max(len(z) for z in nonzero))), np.int64)
  for i, z in enumerate(nonzero):
    if len(z):
      index[i], index[i, :len(z)] = z[0], z
  u, v = np.divmod(index, s)
  return Sparse(u - s // 2, v - s // 2, np.take_along_axis(flat, index, 1))


@dataclasses.dataclass(frozen=True)
class Stamps:
  """Every paddle of one preset and margin. Index 0..359: seeds at (index - 180) degrees;
  360 + (dy + R) * G + (dx + R) (G = 2 R + 1, R = L + margin + 1): an extension whose head is
  (dy, dx) from its pivot. lines/masks: float32 [K, s, s] patches centred on the start."""
  half: int  # s = 2 half + 1
  ring_radius: int  # L + margin
  ring_reach: int  # R
  lines: Sparse
  masks: Sparse
  grown: Sparse  # masks grown by the disc of radius margin (patches of s + 2 m)
  kernels: np.ndarray  # int [360, k, 2] seed-struct offsets (padded with `kernel_valid`)
  kernel_valid: np.ndarray  # bool [360, k]

  def ring_index(self, dy, dx):
    g = 2 * self.ring_reach + 1
    return 360 + (dy + self.ring_reach) * g + (dx + self.ring_reach)


def _paddle(p: Preset, margin: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
  """(line, mask) patches of one paddle (`draw_line_n_mask`)."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  aa, length = p.antialias_scale, p.paddle_length
  half = length + int(math.ceil(p.paddle_thickness)) + margin
  centre = half * aa
  head = translate(centre, centre, angle, length * aa)
  fine = Image.new("F", (2 * centre + 1, 2 * centre + 1), "black")
  ImageDraw.Draw(fine).line([(centre, centre), (int(head[1]), int(head[0]))], fill="white",
                            width=int(round(p.paddle_thickness * aa)))
  fine = np.asarray(fine) > 0
  grown = ndimage.binary_dilation(fine, structure=_disc(margin * aa))
  shape = (2 * half + 1, 2 * half + 1)
  return _shrink(fine * 255, shape), _shrink(grown * 255, shape)


@functools.lru_cache(maxsize=None)
def stamps(p: Preset, margin: int) -> Stamps:
  """All paddle patches and seed structs of a preset at one margin (rendered once)."""
  half = p.paddle_length + int(math.ceil(p.paddle_thickness)) + margin
  radius = p.paddle_length + margin
  reach = radius + 1
  angles = [d * np.pi / 180 for d in range(-180, 180)]
  offsets = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
  angles += [float(flip(np.arctan2(dy, dx))) for dy, dx in offsets]
  lines, masks = zip(*(_paddle(p, margin, a) for a in angles))
  masks = np.stack(masks)
  # `extend_snake` looks candidates up in the occupancy grown by a disc (cv2.dilate, a max
  # filter); growing each mask once and taking maxima gives the same.
  framed = np.pad(masks, ((0, 0), (margin, margin), (margin, margin)))
  grown = np.zeros_like(framed)
  side = masks.shape[1] + 2 * margin
  for oy, ox in np.argwhere(_disc(margin)) - margin:
    shifted = np.pad(framed, ((0, 0), (margin, margin), (margin, margin)))
    grown = np.maximum(grown, shifted[:, margin - oy:margin - oy + side,
                                      margin - ox:margin - ox + side])
  # Seed structs: the mask placed at (radius + 1, radius + 1) of a (2 radius + 1)^2 kernel whose
  # anchor is its centre; offsets of its pixels equal to 1.0 relative to the anchor.
  kernels = []
  u = np.arange(2 * half + 1) + 1 - half  # patch pixel -> offset from the anchor
  inside = np.abs(u) <= radius
  for mask in masks[:360]:
    rows, cols = np.nonzero((mask >= 1.0) & inside[:, None] & inside[None, :])
    kernels.append(np.stack([u[rows], u[cols]], -1))
  width = max(len(k) for k in kernels)
  padded = np.zeros((360, width, 2), np.int64)
  valid = np.zeros((360, width), bool)
  for i, k in enumerate(kernels):
    padded[i, :len(k)], valid[i, :len(k)] = k, True
  return Stamps(half, radius, reach, sparse(np.stack(lines)), sparse(masks), sparse(grown),
                padded, valid)


def marker_reach(p: Preset) -> int:
  """Half-width of a marker patch: past it the Lanczos-shrunk disc is exactly 0, and a border
  farther than it leaves the patch unchanged (disc + 3 px of kernel support, twice)."""
  return int(math.ceil(p.marker_radius)) + 7


@functools.lru_cache(maxsize=None)
def marker_patches(p: Preset) -> Sparse:
  """The marker (`draw_circle`) centred in a (2 E + 1)^2 patch (E = marker_reach), for each
  class of row r and of column c (see `marker_class`): index r * C + c."""
  size, aa, reach = p.size, p.antialias_scale, marker_reach(p)
  positions = list(range(reach + 1)) + [reach + 1] + list(range(size - 1 - reach, size))
  out = np.zeros((len(positions), len(positions), 2 * reach + 1, 2 * reach + 1), np.float32)
  y, x = np.ogrid[:size * aa, :size * aa]
  canvas = np.zeros((size + 2 * reach,) * 2, np.float32)
  for i, row in enumerate(positions):
    for j, col in enumerate(positions):
      fine = (y - row * aa) ** 2 + (x - col * aa) ** 2 <= (p.marker_radius * aa) ** 2
      canvas[reach:reach + size, reach:reach + size] = _shrink(fine * 255, (size, size))
      out[i, j] = canvas[row:row + 2 * reach + 1, col:col + 2 * reach + 1]
  return sparse(out.reshape((-1,) + out.shape[2:]))


def marker_class(p: Preset, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """marker_patches' index for markers at (rows, cols): a row's (or column's) class is itself
  near the border, one shared class in the interior."""
  reach = marker_reach(p)

  def one(coord):
    return np.where(coord <= reach, coord,
                    np.where(coord >= p.size - 1 - reach,
                             coord - (p.size - 1 - reach) + reach + 2, reach + 1))

  return one(rows) * (2 * reach + 3) + one(cols)


# ----------------------------------------------------------------------------
# Canvases: a batch of images and occupancy masks with a zero frame; stamping patches.
# ----------------------------------------------------------------------------
class Canvas:
  """float32 image, occupancy and occupancy grown by a disc of radius `margin`, [n, side, side]
  with side = size + 2 pad; the frame stays 0, so a patch that leaves the image is clipped and a
  gather outside reads 0 (cv2's border)."""

  def __init__(self, n: int, size: int, pad: int, padding: int, margin: int):
    self.size, self.pad, self.side = size, pad, size + 2 * pad
    self.image = np.zeros((n, self.side, self.side), np.float32)
    self.mask = np.zeros_like(self.image)
    self.grown = np.zeros_like(self.image)
    for array, width in ((self.mask, padding), (self.grown, padding + margin)):
      inner = self.inner(array)  # the occupied border (grown: pixels within margin of it)
      inner[:, :width], inner[:, -width:], inner[:, :, :width], inner[:, :, -width:] = 1, 1, 1, 1

  def inner(self, array: np.ndarray) -> np.ndarray:
    return array[:, self.pad:self.pad + self.size, self.pad:self.pad + self.size]

  def take(self, ids: np.ndarray) -> "Canvas":
    out = object.__new__(Canvas)
    out.size, out.pad, out.side = self.size, self.pad, self.side
    out.image, out.mask, out.grown = self.image[ids], self.mask[ids], self.grown[ids]
    return out

  def put(self, ids: np.ndarray, other: "Canvas", rows: np.ndarray) -> None:
    self.image[ids], self.mask[ids] = other.image[rows], other.mask[rows]
    self.grown[ids] = other.grown[rows]

  def place(self, ids, rows, cols, u, v) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices [m, W] of offsets (u, v) [m, W] from image pixels (rows, cols) of images
    `ids`, and which of them lie inside the image."""
    r, c = rows[:, None] + u, cols[:, None] + v
    inside = (r >= 0) & (r < self.size) & (c >= 0) & (c < self.size)
    return (ids[:, None] * self.side + r + self.pad) * self.side + c + self.pad, inside

  def gather(self, array: np.ndarray, ids, rows, cols) -> np.ndarray:
    """array at image pixels (rows, cols) (any shape, broadcast with ids[:, None, ...])."""
    ids = ids.reshape(ids.shape + (1,) * (rows.ndim - 1))
    return array[ids, rows + self.pad, cols + self.pad]


def stamp(canvas: Canvas, array: np.ndarray, ids, rows, cols, table: Sparse, index,
          scale: float = 1.0) -> None:
  """array = max(array, scale * patch) for patches table[index] centred on (rows, cols) of
  images `ids`; clipped to the image."""
  if not len(ids):
    return
  flat, inside = canvas.place(ids, rows, cols, table.u[index], table.v[index])
  values = table.values[index] * scale * inside
  target = array.reshape(-1)
  target[flat] = np.maximum(target[flat], values)
