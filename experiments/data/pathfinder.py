"""Pathfinder: a seeded, vectorised reimplementation of the original generator.

References:
  * Linsley et al. 2018, "Learning long-range spatial dependencies with horizontal gated
    recurrent units", NeurIPS (the Pathfinder challenge).
  * Kim, Linsley et al. 2020, "Disentangling neural mechanisms for perceptual grouping", ICLR:
    the generator LRA used (drewlinsley/pathfinder: `snakes.py`, `snakes2.py`, run by
    `snakes2_wrapper.py`), with the settings LRA's `lra_benchmarks/data/pathfinder.py` states.
  * Tay et al. 2021, "Long Range Arena", ICLR: Pathfinder at 32x32 (1,024 pixel tokens) and
    Path-X at 128x128 (16,384 tokens), both `curv_contour_length_14`.

Task. Two long contours of `contour_length` dashes ("paddles"), short distractor contours and
two round markers. One marker sits on the first paddle of one long contour; label 1: the other
marker ends the same contour; label 0: it ends the other one.

The original's rules, reimplemented (no code copied) over a batch of images at once; paddle and
marker pixels are rendered by PIL exactly as the original renders them
(experiments/data/pathfinder_stamps.py, which also holds the presets):
  * an occupancy mask starts with a `padding` border; every paddle has a mask (its line grown
    by a disc of radius `margin`), and a paddle whose mask adds to the occupancy above 1.8
    anywhere is refused;
  * the first paddle of long contour 1 starts, in a whole-degree direction, at a pixel drawn
    uniformly among those where its struct meets no pixel of a border band 2 `seed_distance`
    wide (the central 4x4 block at 32 px; the struct ignores pixels outside the image, so edge
    pixels whose struct points out qualify too, and then fail the next check); that of contour
    2 starts `seed_distance` away in a whole-degree direction; both paddles' heads and pivots
    must lie inside, else up to `max_paddle_retrial + 1` draws;
  * a contour grows paddle by paddle: the next pivot is `paddle_length + 2 margin` ahead of the
    last, the candidate heads are the integer pixels on the ring of radius `paddle_length +
    margin` around it (inside the image), weighted by cos^2(min(continuity * turn, pi / 2)) and
    by 1 - the occupancy grown by `margin` there; up to `max_paddle_retrial + 1` draws, else the
    contour fails. The two long contours grow in turns and share the occupancy, which takes a
    paddle's mask once the contour's next paddle is placed (so consecutive paddles may touch);
    if either fails, both are redrawn from scratch. The last paddle of contour 1 never enters
    the occupancy, as in the original (distractors may touch it);
  * `contour_length // 3`-paddle distractors, `budget // length` of them, each started at a
    uniformly drawn pixel whose paddle would not touch the occupancy (with a 1-pixel border),
    none once under 1% of the image is free, each tried `max_distractor_contour_retrial + 1`
    times, then left out;
  * markers: discs of `marker_radius` drawn at `antialias_scale` times the size and shrunk;
    paddles of long contours at contrast `paddle_contrast * snake_contrast`, distractors at
    `snake_contrast` (at 32 px 1.5 and 2: distractors are the brighter); the image is their
    maximum, scaled so its brightest pixel is 255 (the original's `scipy.misc.imsave`); no
    single-paddle clutter (`use_single_paddles = False` in the wrapper script).
What differs: our random streams (any seed gives a new set, not the original's images); labels
are an exact half/half permutation per chunk (the original draws each with p = 1/2); the
original redraws the two long contours until they fit, we stop after _MAX_ROUNDS batches of
tries with a ConfigError (never reached at LRA's settings, where about 1 try in 70 fits at
32 px, hard, and 1 in 50 to 250 at 128 px, margins 2 and 3: most contours run into the border).

Speed (`PYTHONPATH=. python scripts/pathfinder_speed.py`, one process on the 2-core development
machine, another job on the other core): 10,240 images at 32 px, hard, in 31 s (3.1 ms each, LRA's
200k in about 10 minutes); Path-X about 0.09 s per image (200k: about 5 hours), as the original's
rules refuse most contour pairs at 128 px.

Determinism: images come in chunks of CHUNK pixels' worth (512 images at 32 px, 32 at 128 px:
`chunk_size`); chunk c is a pure function of (seed, c) through `np.random.default_rng([seed,
c])`, so `generate(n)` is a prefix of `generate(m > n)`.
`load_pathfinder` caches the three splits in one `.npz` keyed by every argument and
_FORMAT_VERSION (experiments/data/npz_cache.py), so a cache of an older generator is never read.
It returns `{"inputs": uint8 [N, size * size] (row-major), "labels": int32 [N]}`, as the
reader of LRA's released folders (experiments/data/pathfinder_lra.py) does.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from encoders.errors import ConfigError
from experiments.data import npz_cache
from experiments.data import pathfinder_stamps as stamps_lib

SPLITS = ("train", "validation", "test")
NUM_CLASSES = 2
CHUNK = 512  # images per independently seeded chunk at 32 px (chunk_size: the same pixels)
_FORMAT_VERSION = 2  # 1: the earlier solid-polyline generator; bump when the output changes
_MAX_ROUNDS = 4000  # batches of tries of the two long contours before giving up
_ATTEMPTS = 4096 * 32 * 32  # pixels of one batch of tries (4,096 at 32 px, 256 at 128)
_REJECTION_ROUNDS = 16  # uniform draws of a distractor start before scanning every pixel
_FREE = 0.3  # occupancy at or below which a pixel is free (the original's ceil(mask - 0.3))
_CLASH = 1.8  # occupancy + a paddle's mask at or above which the paddle is refused
_MIN_FREE_FRACTION = 0.01  # no distractor starts once less of the image is free


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"data.pathfinder.{name}={value!r}; must be an int >= {minimum}")
  return int(value)


# ----------------------------------------------------------------------------
# Contours.
# ----------------------------------------------------------------------------
class _Snake:
  """Per-image state of n growing contours of up to `length` paddles: pivot, orientation, the
  paddles so far (stamp index and start pixel; the last one's mask enters the occupancy when the
  next one is placed) and the first pixel."""

  def __init__(self, n: int, length: int):
    zeros = lambda: np.zeros(n, np.int64)  # noqa: E731
    self.pivot_y, self.pivot_x, self.tail_y, self.tail_x = zeros(), zeros(), zeros(), zeros()
    self.angle = np.zeros(n)
    self.segs, self.ys, self.xs = (np.zeros((n, length), np.int64) for _ in range(3))
    self.count = 0  # paddles placed (the same for every image still alive)

  def last(self, ids):
    k = self.count - 1
    return self.segs[ids, k], self.ys[ids, k], self.xs[ids, k]

  def add(self, ids, seg, y, x) -> None:
    self.segs[ids, self.count], self.ys[ids, self.count], self.xs[ids, self.count] = seg, y, x


class _Context:
  """What every step needs: the preset, one margin's stamps and its ring of candidates."""

  def __init__(self, p: stamps_lib.Preset, margin: int):
    self.p, self.margin = p, margin
    self.st = stamps_lib.stamps(p, margin)
    radius = self.st.ring_radius
    self.ring = np.arange(0, 360, 360.0 / (2 * radius * np.pi)) * np.pi / 180
    self.pad = max(self.st.half + margin, stamps_lib.marker_reach(p))
    self.centre = None  # _centre_starts' table, made once

  def canvas(self, n: int) -> stamps_lib.Canvas:
    return stamps_lib.Canvas(n, self.p.size, self.pad, self.p.padding, self.margin)


def _reversed(angle):
  """The original's reversed seed orientation (angle + pi, or angle - pi from 0 on)."""
  return np.where(angle + np.pi < np.pi, angle + np.pi, angle - np.pi)


def _inside(size: int, *coords) -> np.ndarray:
  return np.logical_and.reduce([(c >= 0) & (c < size) for c in coords])


def _seed(snake: _Snake, ids, tail_y, tail_x, degrees, ctx: _Context):
  """Sets the contours of images `ids` to a first paddle from the tail along `degrees`; returns
  whether its head and pivot are inside the image."""
  angle = degrees * np.pi / 180
  head_y, head_x = stamps_lib.translate(tail_y, tail_x, angle, ctx.p.paddle_length)
  pivot_y, pivot_x = stamps_lib.translate(head_y, head_x, _reversed(angle),
                                          ctx.p.paddle_length + ctx.margin)
  ok = _inside(ctx.p.size, head_y, head_x, pivot_y, pivot_x)
  snake.pivot_y[ids], snake.pivot_x[ids], snake.angle[ids] = pivot_y, pivot_x, angle
  snake.tail_y[ids], snake.tail_x[ids] = tail_y, tail_x
  snake.count = 0
  snake.add(ids, degrees + 180, tail_y, tail_x)
  snake.count = 1
  return ok


def _draw(canvas, snake: _Snake, ids, ctx: _Context, contrast: float, first: int = 0,
          into=None) -> None:
  """Draws paddles first.. of contours `ids` into the canvas images `into` (default ids)."""
  into = ids if into is None else into
  for k in range(first, snake.count):
    seg, y, x = snake.segs[ids, k], snake.ys[ids, k], snake.xs[ids, k]
    stamps_lib.stamp(canvas, canvas.image, into, y, x, ctx.st.lines, seg, contrast)


def _occupy_last(canvas, snake: _Snake, ids, ctx: _Context) -> None:
  """The last paddle's mask into the occupancy (and its grown copy)."""
  seg, y, x = snake.last(ids)
  stamps_lib.stamp(canvas, canvas.mask, ids, y, x, ctx.st.masks, seg)
  stamps_lib.stamp(canvas, canvas.grown, ids, y, x, ctx.st.grown, seg)


def _extend(rng, canvas: stamps_lib.Canvas, snake: _Snake, alive: np.ndarray, ctx: _Context,
            contrast: float | None) -> np.ndarray:
  """One more paddle on every alive contour (`extend_snake`), drawn into the image unless
  contrast is None; returns who is still alive."""
  p, st, size = ctx.p, ctx.st, ctx.p.size
  ids = np.flatnonzero(alive)
  angle = snake.angle[ids]
  ny, nx = stamps_lib.translate(snake.pivot_y[ids], snake.pivot_x[ids], angle,
                                p.paddle_length + 2 * ctx.margin)
  fy = ny[:, None] + st.ring_radius * np.sin(ctx.ring)
  fx = nx[:, None] + st.ring_radius * np.cos(ctx.ring)
  outside = (fy >= size) | (fy < 0) | (fx >= size) | (fx < 0)
  none = size * size
  key = np.sort(np.where(outside, none, fy.astype(np.int64) * size + fx.astype(np.int64)), 1)
  valid = key < none
  valid[:, 1:] &= key[:, 1:] != key[:, :-1]  # np.unique of the candidate pixels
  cy, cx = np.where(valid, key // size, 0), np.where(valid, key % size, 0)
  dy, dx = cy - ny[:, None], cx - nx[:, None]
  heading = np.arctan2(dy, dx)
  turn = np.abs(heading - angle[:, None])
  turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * p.continuity, np.pi / 2)
  weight = np.maximum(np.cos(turn), 0) ** 2
  free = 1 - canvas.gather(canvas.grown, ids, cy, cx)
  cmf = np.cumsum(np.where(valid, free * weight, 0.0), 1)
  total = cmf[:, -1]
  pending = total >= 1e-4  # else a dead end
  choice = np.zeros(len(ids), np.int64)
  for _ in range(p.max_paddle_retrial + 1):
    todo = np.flatnonzero(pending)
    if not len(todo):
      break
    draw = np.minimum(rng.random(len(todo)) * total[todo], np.nextafter(total[todo], 0))
    k = np.argmax(cmf[todo] > draw[:, None], 1)
    seg = st.ring_index(dy[todo, k], dx[todo, k])
    flat, inside = canvas.place(ids[todo], cy[todo, k], cx[todo, k], st.masks.u[seg],
                                st.masks.v[seg])
    clash = (canvas.mask.reshape(-1)[flat] + st.masks.values[seg] * inside).max(1) >= _CLASH
    fits = todo[~clash]
    choice[fits] = k[~clash]
    pending[fits] = False
  done = (total >= 1e-4) & ~pending
  alive[ids[~done]] = False
  rows, ids, k = np.flatnonzero(done), ids[done], choice[done]
  _occupy_last(canvas, snake, ids, ctx)
  snake.pivot_y[ids], snake.pivot_x[ids], snake.angle[ids] = ny[done], nx[done], heading[rows, k]
  snake.add(ids, st.ring_index(dy[rows, k], dx[rows, k]), cy[rows, k], cx[rows, k])
  snake.count += 1
  if contrast is not None:
    _draw(canvas, snake, ids, ctx, contrast, first=snake.count - 1)
  return alive


def _centre_starts(ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
  """Per seed degree, the pixels where contour 1 may start (flat, padded) and their count:
  clear of the border band of 2 seed_distance once grown by the seed's struct."""
  p, st = ctx.p, ctx.st
  if ctx.centre is None:
    size, band = p.size, 2 * p.seed_distance
    lined = np.ones((size, size), bool)
    lined[band:size - band, band:size - band] = False
    lined[:p.padding], lined[-p.padding:], lined[:, :p.padding], lined[:, -p.padding:] = (
        True, True, True, True)
    reach = st.ring_radius + 1
    framed = np.pad(lined, reach)
    starts = []
    for kernel, valid in zip(st.kernels, st.kernel_valid):
      hit = np.zeros((size, size), bool)
      for oy, ox in kernel[valid]:
        hit |= framed[reach + oy:reach + oy + size, reach + ox:reach + ox + size]
      starts.append(np.flatnonzero(~hit))
    counts = np.array([len(s) for s in starts])
    table = np.zeros((360, max(counts.max(), 1)), np.int64)
    for i, s in enumerate(starts):
      table[i, :len(s)] = s
    ctx.centre = (table, counts)
  return ctx.centre


def _pair_attempts(rng, m: int, ctx: _Context, contour_length: int):
  """m independent tries of `two_snakes`: (canvas, the two contours, who succeeded)."""
  p = ctx.p
  table, counts = _centre_starts(ctx)
  work = ctx.canvas(m)
  pair = (_Snake(m, contour_length), _Snake(m, contour_length))
  alive = np.zeros(m, bool)
  todo = np.arange(m)
  tail_y, tail_x = np.zeros(m, np.int64), np.zeros(m, np.int64)
  for _ in range(p.max_paddle_retrial + 1):  # contour 1's first paddle
    degrees = rng.integers(-180, 180, len(todo))
    count = counts[degrees + 180]
    start = table[degrees + 180, (rng.random(len(todo)) * count).astype(np.int64)]
    ok = _seed(pair[0], todo, start // p.size, start % p.size, degrees, ctx) & (count > 0)
    tail_y[todo], tail_x[todo] = start // p.size, start % p.size
    alive[todo[ok]] = True
    todo = todo[~ok & (count > 0)]  # no free start at all fails the try
  todo = np.flatnonzero(alive)
  alive[:] = False
  for _ in range(p.max_paddle_retrial + 1):  # contour 2's, seed_distance away
    direction = rng.integers(0, 360, len(todo)) * np.pi / 180
    degrees = rng.integers(-180, 180, len(todo))
    y = np.round(tail_y[todo] + p.seed_distance * np.sin(direction)).astype(np.int64)
    x = np.round(tail_x[todo] + p.seed_distance * np.cos(direction)).astype(np.int64)
    ok = _seed(pair[1], todo, y, x, degrees, ctx) & _inside(p.size, y, x)
    alive[todo[ok]] = True
    todo = todo[~ok]
  for _ in range(contour_length - 1):  # the two contours grow in turns (drawn when whole)
    for snake in pair:
      alive = _extend(rng, work, snake, alive, ctx, None)
  _occupy_last(work, pair[1], np.flatnonzero(alive), ctx)  # the original adds only this one
  return work, pair, alive


def _long_pair(rng, n: int, ctx: _Context, contour_length: int):
  """`two_snakes` for n images, redrawn until both contours are whole (tries run in batches of
  _ATTEMPTS pixels' worth; the first successes are kept in order): (canvas, first pixels
  [n, 2 contours, (row, col)], last heads [n, 2, 2])."""
  p = ctx.p
  canvas = ctx.canvas(n)
  origin, terminal = np.zeros((n, 2, 2), np.int64), np.zeros((n, 2, 2), np.int64)
  batch = max(64, _ATTEMPTS // (p.size * p.size))
  filled = 0
  for _ in range(_MAX_ROUNDS):
    work, pair, alive = _pair_attempts(rng, batch, ctx, contour_length)
    ids = np.flatnonzero(alive)[:n - filled]
    target = np.arange(filled, filled + len(ids))
    canvas.put(target, work, ids)
    for k, snake in enumerate(pair):
      _draw(canvas, snake, ids, ctx, p.paddle_contrast * p.snake_contrast, into=target)
      origin[target, k, 0], origin[target, k, 1] = snake.tail_y[ids], snake.tail_x[ids]
      _, terminal[target, k, 0], terminal[target, k, 1] = snake.last(ids)
    filled += len(ids)
    if filled == n:
      return canvas, origin, terminal
  raise ConfigError(f"data.pathfinder: two contours of {contour_length} paddles did not fit "
                    f"in {_MAX_ROUNDS * batch} tries ({p.name})")


def _free_starts(rng, canvas: stamps_lib.Canvas, snake: _Snake, ctx: _Context) -> np.ndarray:
  """`seed_snake` for a distractor: a first paddle from a pixel drawn uniformly among those where
  its struct meets no occupancy above _FREE (with a 1-pixel border); returns who has one."""
  p, st, size = ctx.p, ctx.st, ctx.p.size
  n = canvas.image.shape[0]
  free_fraction = (canvas.inner(canvas.mask) <= _FREE).mean((1, 2))
  lined = canvas.mask.copy()
  inner = canvas.inner(lined)
  inner[:, 0], inner[:, -1], inner[:, :, 0], inner[:, :, -1] = 1, 1, 1, 1
  alive = np.zeros(n, bool)
  todo = np.flatnonzero(free_fraction >= _MIN_FREE_FRACTION)
  for _ in range(p.max_paddle_retrial + 1):
    if not len(todo):
      break
    degrees = rng.integers(-180, 180, len(todo))
    kernel, valid = st.kernels[degrees + 180], st.kernel_valid[degrees + 180]
    start = np.full(len(todo), -1, np.int64)
    search = np.arange(len(todo))
    for _ in range(_REJECTION_ROUNDS):  # uniform over the free starts, by rejection
      y, x = rng.integers(0, size, len(search)), rng.integers(0, size, len(search))
      hit = canvas.gather(lined, todo[search], y[:, None] + kernel[search, :, 0],
                          x[:, None] + kernel[search, :, 1])
      ok = np.where(valid[search], hit, 0).max(1) <= _FREE
      start[search[ok]] = (y * size + x)[ok]
      search = search[~ok]
      if not len(search):
        break
    pixels = np.arange(size * size)
    for i in search:  # few free starts, or none: scan every pixel
      offsets = kernel[i][valid[i]]
      hit = canvas.gather(lined, np.full(size * size, todo[i]),
                          pixels[:, None] // size + offsets[:, 0], pixels[:, None] % size
                          + offsets[:, 1])
      free = np.flatnonzero(hit.max(1) <= _FREE)
      if len(free):
        start[i] = free[rng.integers(len(free))]
    found = start >= 0
    ok = _seed(snake, todo, start // size, start % size, degrees, ctx) & found
    alive[todo[ok]] = True
    todo = todo[found & ~ok]  # a missed head or pivot is redrawn; no free start fails
  return alive


def _distractor(rng, canvas: stamps_lib.Canvas, ctx: _Context, length: int) -> np.ndarray:
  """One `make_snake` of `length` paddles on every image of the canvas; who succeeded."""
  snake = _Snake(canvas.image.shape[0], length)
  alive = _free_starts(rng, canvas, snake, ctx)
  _draw(canvas, snake, np.flatnonzero(alive), ctx, ctx.p.snake_contrast)
  for _ in range(length - 1):
    alive = _extend(rng, canvas, snake, alive, ctx, ctx.p.snake_contrast)
  _occupy_last(canvas, snake, np.flatnonzero(alive), ctx)
  return alive


def _distractors(rng, canvas: stamps_lib.Canvas, ctx: _Context, contour_length: int) -> None:
  """`make_many_snakes`: each distractor tried up to max_distractor_contour_retrial + 1 times on
  a copy, kept where it succeeds, else left out."""
  length, number = ctx.p.distractors(contour_length)
  for _ in range(number):
    pending = np.arange(canvas.image.shape[0])
    for _ in range(ctx.p.max_distractor_contour_retrial + 1):
      work = canvas.take(pending)
      ok = _distractor(rng, work, ctx, length)
      canvas.put(pending[ok], work, np.flatnonzero(ok))
      pending = pending[~ok]
      if not len(pending):
        break


def _finish(rng, canvas: stamps_lib.Canvas, origin, terminal, labels, ctx: _Context):
  """Markers on a random contour's first pixel and on the last head of the same (label 1) or
  the other contour (label 0), then the min-max scaling to uint8: (images, marker centres)."""
  p, n = ctx.p, len(labels)
  rows = np.arange(n)
  which = rng.integers(0, 2, n)
  ends = np.stack([origin[rows, which], terminal[rows, np.where(labels == 1, which, 1 - which)]],
                  1)
  patches = stamps_lib.marker_patches(p)
  marks = np.zeros_like(canvas.image)
  for k in range(2):
    y, x = ends[:, k, 0], ends[:, k, 1]
    stamps_lib.stamp(canvas, marks, rows, y, x, patches, stamps_lib.marker_class(p, y, x))
  image = np.maximum(canvas.inner(canvas.image), canvas.inner(marks))
  low = image.min((1, 2), keepdims=True)
  span = image.max((1, 2), keepdims=True) - low
  scaled = (image - low) * (255 / np.where(span > 0, span, 1))
  return (np.clip(scaled, 0, 255) + 0.5).astype(np.uint8), ends


_CONTEXTS: dict = {}


def _context(p: stamps_lib.Preset, margin: int) -> _Context:
  if (p, margin) not in _CONTEXTS:
    _CONTEXTS[p, margin] = _Context(p, margin)
  return _CONTEXTS[p, margin]


def chunk_size(size: int) -> int:
  """Images per chunk at a size: CHUNK at 32 px, the same number of pixels at others."""
  return max(8, CHUNK * 32 * 32 // (size * size))


def _chunk(seed: int, index: int, p: stamps_lib.Preset, contour_length: int) -> dict:
  rng = np.random.default_rng([seed, index])
  n = chunk_size(p.size)
  labels = (rng.permutation(n) % 2).astype(np.int32)
  margins = rng.choice(np.array(p.paddle_margins), n)
  images = np.zeros((n, p.size, p.size), np.uint8)
  ends = np.zeros((n, 2, 2), np.int64)
  for margin in p.paddle_margins:
    ids = np.flatnonzero(margins == margin)
    if len(ids):
      ctx = _context(p, margin)
      canvas, origin, terminal = _long_pair(rng, len(ids), ctx, contour_length)
      _distractors(rng, canvas, ctx, contour_length)
      images[ids], ends[ids] = _finish(rng, canvas, origin, terminal, labels[ids], ctx)
  return {"images": images, "labels": labels, "endpoints": ends}


def generate(num_examples: int, *, seed: int, size: int = 32, contour_length: int = 14
             ) -> dict[str, np.ndarray]:
  """`num_examples` Pathfinder images of LRA's `size` preset (32, 64, 128 = Path-X, 256) and
  difficulty (contour_length 6, 9, 14), deterministically (see the module docstring).

  Returns {"images": uint8 [N, size, size], "labels": int32 [N] (1 = the markers end one
  contour), "endpoints": int [N, 2, 2] (marker centres, (row, col))}.
  """
  p = stamps_lib.preset(size, contour_length)
  num_examples = _check_int("num_examples", num_examples, 1)
  seed = _check_int("seed", seed, 0)
  chunks = [_chunk(seed, c, p, contour_length)
            for c in range(-(-num_examples // chunk_size(size)))]
  return {k: np.concatenate([c[k] for c in chunks])[:num_examples] for k in chunks[0]}


# ----------------------------------------------------------------------------
# Cached splits.
# ----------------------------------------------------------------------------
def _split_bounds(num_train: int, num_eval: int) -> dict[str, tuple[int, int]]:
  return {"train": (0, num_train), "validation": (num_train, num_train + num_eval),
          "test": (num_train + num_eval, num_train + 2 * num_eval)}


def load_pathfinder(split: str, *, num_train: int, num_eval: int, seed: int,
                    cache_dir: str | os.PathLike, size: int = 32,
                    contour_length: int = 14) -> dict[str, np.ndarray]:
  """One split of a generated, cached Pathfinder set: the first `num_train` images are train,
  the next `num_eval` validation, the next `num_eval` test. Returns {"inputs": uint8
  [N, size * size], "labels": int32 [N]}."""
  if split not in SPLITS:
    raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  p = stamps_lib.preset(size, contour_length)
  num_train = _check_int("num_train", num_train, 1)
  num_eval = _check_int("num_eval", num_eval, 1)
  seed = _check_int("seed", seed, 0)
  args = dict(format_version=_FORMAT_VERSION, num_train=num_train, num_eval=num_eval,
              seed=seed, preset=p.name, contour_length=contour_length)
  path, args_json = npz_cache.path_for(cache_dir, "pathfinder", args)
  cached = npz_cache.read(path, args_json, "Pathfinder")
  if cached is None:
    logging.info("Pathfinder: generating %d images (%s) into %s", num_train + 2 * num_eval,
                 args_json, path)
    data = generate(num_train + 2 * num_eval, seed=seed, size=size,
                    contour_length=contour_length)
    flat = data["images"].reshape(len(data["images"]), -1)
    cached = {}
    for name, (lo, hi) in _split_bounds(num_train, num_eval).items():
      cached[f"{name}_inputs"], cached[f"{name}_labels"] = flat[lo:hi], data["labels"][lo:hi]
    npz_cache.write(path, args_json, cached, "Pathfinder")
  return {"inputs": cached[f"{split}_inputs"], "labels": cached[f"{split}_labels"]}
