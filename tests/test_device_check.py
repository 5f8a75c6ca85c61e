"""scripts/device_check.sh, which runs once on a lent accelerator with its own Python stack and no
network, must pass the first time: its steps fit the device window, nothing it imports needs a
package that machine lacks, and the whole check runs on CPU under that machine's stack
(tests/device_stack/sitecustomize.py makes the missing packages unimportable)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "device_check.sh")
# What the lent machines lack: their stack is Python 3.12 with jax (CUDA 13 or libtpu), flax,
# optax, orbax-checkpoint, pytest and numpy (absl-py and PyYAML come with them).
DEVICE_MISSING = ("ml_collections", "grain", "tensorboardX", "tensorflow_datasets", "tensorflow",
                  "array_record", "tokenizers", "safetensors", "tqdm", "scipy", "matplotlib",
                  "PIL", "transformers", "torch", "sentence_transformers")
WINDOW_SECONDS = 8 * 60  # what the check may take of a 15-minute device loan


def carried() -> set[str]:
  """Top-level modules of the wheels scripts/device_wheels.sh carries to the device."""
  with open(os.path.join(ROOT, "scripts", "device_wheels.sh"), encoding="utf-8") as f:
    wheels = re.findall(r"^\s+([A-Za-z0-9_.-]+)==", f.read(), re.M)
  return {wheel.replace("-", "_") for wheel in wheels}


def missing() -> list[str]:
  return sorted(set(DEVICE_MISSING) - carried())


def device_env(**extra) -> dict[str, str]:
  """This environment with the device machine's missing packages unimportable."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(PYTHONPATH=os.path.join(ROOT, "tests", "device_stack"),
             DEVICE_STACK_MISSING=",".join(missing()), JAX_PLATFORMS="cpu",
             PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""), **extra)
  return env


def test_the_steps_fit_the_device_window():
  with open(SCRIPT, encoding="utf-8") as f:
    text = f.read()
  limits = dict(re.findall(r"^(?:step|bench) (\w+) (\d+)\b", text, re.M))
  kill_after = int(re.search(r"^kill_after=(\d+)", text, re.M).group(1))
  assert set(limits) == {"devices", "tests", "attention", "train_step"}
  assert sum(int(s) + kill_after for s in limits.values()) < WINDOW_SECONDS


def test_the_simulated_stack_refuses_the_missing_packages():
  assert carried() == {"ml_collections"}
  probe = ("import importlib, sys\n"
           "for name in sys.argv[1:]:\n"
           "  try:\n    importlib.import_module(name)\n"
           "  except ModuleNotFoundError:\n    print('missing', name)\n"
           "import numpy, ml_collections\n")
  out = subprocess.run([sys.executable, "-c", probe, "tqdm", "scipy.ndimage", "numpy"],
                       env=device_env(), capture_output=True, text=True, check=True).stdout
  assert out.split("\n")[:2] == ["missing tqdm", "missing scipy.ndimage"] and "numpy" not in out


def module_level_imports(path: str) -> set[str]:
  """Top-level package names a module imports when it is imported (not inside functions or
  `if TYPE_CHECKING:`)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in tree.body:
    if isinstance(node, ast.Import):
      names |= {alias.name.partition(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and not node.level:
      names.add(node.module.partition(".")[0])
  return names


def test_no_module_needs_a_missing_package_to_be_imported():
  """Every module of encoders/ and experiments/ (and the test harness) imports the packages the
  device lacks where it uses them: importing it never fails there."""
  paths = [os.path.join(folder, file) for package in ("encoders", "experiments")
           for folder, _, files in os.walk(os.path.join(ROOT, package))
           for file in files if file.endswith(".py")]
  paths += [os.path.join(ROOT, "tests", name) for name in ("conftest.py", "test_hardware.py")]
  found = {os.path.relpath(p, ROOT): sorted(module_level_imports(p) & set(missing()))
           for p in paths}
  assert {path: names for path, names in found.items() if names} == {}


@pytest.mark.slow
def test_the_device_check_passes_on_cpu_under_the_device_stack(tmp_path):
  """Every step (devices, the hardware tests' collection, both benches at their `quick`
  presets) with the packages the device lacks unimportable; about a minute."""
  out = tmp_path / "check"
  result = subprocess.run(["bash", SCRIPT, str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=device_env(DEVICE_CHECK_PRESET="quick"), timeout=540, check=False)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-4000:]
  summary = (out / "summary.txt").read_text().splitlines()[1:]
  assert [line.split()[:2] for line in summary] == [
      ["devices", "ok"], ["tests", "ok"], ["attention", "ok"], ["train_step", "ok"]]
  assert "backend cpu" in (out / "devices.txt").read_text()
  assert re.search(r"\d+ skipped", (out / "tests.log").read_text())  # collected, no accelerator
  for bench in ("attention", "train_step"):
    assert "| dense" in (out / f"{bench}_results.md").read_text()
    assert "matplotlib is not installed" in (out / bench / "bench.log").read_text()
