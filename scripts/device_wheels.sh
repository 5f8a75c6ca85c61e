#!/usr/bin/env bash
# Downloads into DIR the pure-Python wheels that the GPU/TPU machine's own stack (Python 3.12, jax,
# flax, optax, orbax-checkpoint, pytest, numpy; absl-py and PyYAML with them; no network) lacks
# and that scripts/device_check.sh needs: ml-collections, for the configs and the bench command
# line. Every other package that machine lacks (tensorboardX, tqdm, grain, tensorflow-datasets,
# tokenizers, scipy, matplotlib, ...) is imported only where it is used, and the check uses none
# of them (tests/test_device_check.py runs the whole check with them made unimportable). Run it
# on a machine with index access, in the source tree:
#
#   scripts/device_wheels.sh .whl
#
# then carry .whl/ to the device with the tree (device_check.sh unpacks it). Versions are within
# pyproject.toml's ranges; the wheels' own needs (absl-py, PyYAML) are on the device already, so
# each wheel comes alone (--no-deps).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
wheels=(
  ml-collections==1.1.0  # configs/, experiments.bench's --config flag
)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$1" "${wheels[@]}"
ls -l "$1"
