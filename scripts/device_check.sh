#!/usr/bin/env bash
# The accelerator check, for a GPU or TPU machine with its own Python stack and no network:
#
#   scripts/device_check.sh OUTDIR
#
# Runs from this source tree (PYTHONPATH=.), installs nothing from an index: the wheels that
# scripts/device_wheels.sh put into .whl/ (if present) are unpacked into a temporary folder put
# first on PYTHONPATH. Four steps, each under its own timeout (the limits below plus each one's
# kill grace add up to under 8 minutes); a step that fails or times out is recorded and the next
# one runs:
#   devices     jax, jaxlib and flax versions, backend and devices     -> OUTDIR/devices.txt
#   tests       the hardware tests: pytest -m "gpu or tpu" on the test files that hold them
#               (no other test module is imported)                     -> OUTDIR/tests.log
#   attention   configs/bench/attention.py:PRESET                      -> OUTDIR/attention/
#   train_step  configs/bench/train_step.py:PRESET                     -> OUTDIR/train_step/
# PRESET is `tpu` when the devices step found JAX's TPU backend, else `device` (a GPU), or
# DEVICE_CHECK_PRESET when set (tests/test_device_check.py runs the whole check on CPU with
# `quick`, under the device machine's missing packages). Everything is written into OUTDIR as it
# goes (the benches after every length), so a check cut short still leaves what it measured: run
# it straight into the folder that comes back (`scripts/device_check.sh "$OUT"`). Each bench's
# results.md and results.csv are also copied flat into OUTDIR with the bench's name as prefix,
# and OUTDIR/summary.txt gives every step's exit status and wall time: the seven files of OUTDIR
# itself are the ones to read first.
# Exit status: 0 if every step passed, 1 otherwise.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
mkdir -p "$1"
out=$(cd "$1" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

log() { echo "[$(date +%H:%M:%S)] $*"; }

wheels=(.whl/*.whl)
if [[ -f "${wheels[0]}" ]]; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  log "unpacking ${#wheels[@]} wheels from .whl/ into $site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "${wheels[@]}"
  export PYTHONPATH="$site:$PYTHONPATH"
fi

kill_after=10  # seconds between a step's timeout (SIGTERM) and SIGKILL
summary="$out/summary.txt"
printf '%-11s %6s %7s\n' step status wall_s > "$summary"
failed=0

# step NAME SECONDS LOG COMMAND...: runs COMMAND under a timeout, its output shown and kept in LOG.
step() {
  local name=$1 limit=$2 logfile=$3 start=$SECONDS rc=0 status
  shift 3
  log "$name: start (timeout ${limit} s): $*"
  timeout --kill-after="$kill_after" "$limit" "$@" 2>&1 | tee "$logfile" || rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status="rc=$rc" ;;
  esac
  [[ $rc -eq 0 ]] || failed=$((failed + 1))
  log "$name: $status after $((SECONDS - start)) s"
  printf '%-11s %6s %7d\n' "$name" "$status" $((SECONDS - start)) >> "$summary"
}

# bench NAME SECONDS [FLAG...]: the bench's $preset (and FLAGs) into OUTDIR/NAME, its tables
# copied flat.
bench() {
  local name=$1 limit=$2
  shift 2
  mkdir -p "$out/$name"
  step "$name" "$limit" "$out/$name/bench.log" python3 -m experiments.bench \
    --config "configs/bench/$name.py:$preset" --workdir "$out/$name" "$@"
  for file in results.md results.csv; do
    if [[ -f "$out/$name/$file" ]]; then
      cp "$out/$name/$file" "$out/${name}_$file"
    fi
  done
}

step devices 30 "$out/devices.txt" python3 -c '
import platform

import flax
import jax
import jaxlib

print("python", platform.python_version(), "jax", jax.__version__, "jaxlib", jaxlib.__version__,
      "flax", flax.__version__)
print("backend", jax.default_backend())
for device in jax.devices():
  print("device", device.id, device.platform, device.device_kind)
'
preset=${DEVICE_CHECK_PRESET:-}
if [[ -z $preset ]]; then
  preset=device
  if grep -qx 'backend tpu' "$out/devices.txt" 2>/dev/null; then
    preset=tpu
  fi
fi
log "bench preset: $preset"
mapfile -t hardware_tests < <(grep -l -E 'pytest\.mark\.(gpu|tpu)\b' tests/test_*.py)
step tests 120 "$out/tests.log" python3 -m pytest -q -p no:cacheprovider -m "gpu or tpu" \
  "${hardware_tests[@]}"
bench attention 180
bench train_step 100

log "summary ($summary):"
cat "$summary"
if [[ $failed -ne 0 ]]; then
  log "$failed step(s) failed"
  exit 1
fi
log "all steps passed"
