#!/usr/bin/env bash
# Downloads into DIR the pure-Python wheels that the GPU machine's own stack (Python 3.12, jax,
# flax, optax, orbax-checkpoint, pytest, torch ...; no network) lacks and that
# scripts/device_check.sh imports: the configs and the bench command line (ml-collections), and
# the runner's metrics writer that tests/ import through experiments.train (tensorboardX).
# Data pipelines' grain and tensorflow-datasets are imported only where they are used, and the
# tests that need them skip without them, so the check needs neither. Run it on a machine with
# index access, in the source tree:
#
#   scripts/device_wheels.sh .whl
#
# then carry .whl/ to the device with the tree (device_check.sh unpacks it). Versions are within
# pyproject.toml's ranges; the wheels' own needs (absl-py, PyYAML; numpy, packaging, protobuf)
# are on the device already, so each wheel comes alone (--no-deps).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
wheels=(
  ml-collections==1.1.0  # configs/, experiments.bench's --config flag
  tensorboardX==2.6.5  # experiments.metrics (experiments.train, imported by tests/)
)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$1" "${wheels[@]}"
ls -l "$1"
