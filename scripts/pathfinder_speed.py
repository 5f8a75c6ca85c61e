"""Times the Pathfinder generator (experiments/data/pathfinder.py) on one process: images per
second at 32 px (LRA's hard setting), extrapolated to LRA's 200k images, and at 128 px (Path-X).

    PYTHONPATH=. python scripts/pathfinder_speed.py [--n 10240] [--pathx 32]
"""

from __future__ import annotations

import argparse
import time

from experiments.data import pathfinder


def _time(n: int, **kwargs) -> float:
  start = time.perf_counter()
  pathfinder.generate(n, seed=21, **kwargs)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10_240, help="32-px images per timing")
  parser.add_argument("--pathx", type=int, default=32, help="128-px images (0: skip)")
  args = parser.parse_args()
  pathfinder.generate(8, seed=0)  # render the stamps once, outside the timings
  single = _time(args.n)
  print(f"32 px: {args.n} images in {single:.1f} s, {1e3 * single / args.n:.2f} "
        f"ms/image; 200k images: {200_000 * single / args.n / 60:.1f} min", flush=True)
  if args.pathx:
    pathfinder.generate(8, seed=0, size=128)
    slow = _time(args.pathx, size=128)
    print(f"128 px (Path-X): {args.pathx} images in {slow:.1f} s, "
          f"{slow / args.pathx:.3f} s/image; 200k images: {200_000 * slow / args.pathx / 3600:.1f}"
          " h", flush=True)


if __name__ == "__main__":
  main()
