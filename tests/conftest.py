"""Shared fixtures: a tiny model config builder; the platform tests run on and the hardware
markers (`gpu`, `tpu`: skipped unless JAX's default backend is that one)."""

from __future__ import annotations

import os

import pytest
from _pytest.mark.expression import Expression

# Tests compile hundreds of tiny programs and run each a few times: LLVM's optimisation passes
# cost more than they save there (the suite runs about twice as fast without them). Inherited by
# the CLI subprocesses (add it where a test sets its own XLA_FLAGS); benchmarks, real runs and
# the hardware tests keep XLA's defaults.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
HARDWARE = ("gpu", "tpu")  # markers of tests that need JAX's backend of that name


def selects_hardware(markexpr: str) -> bool:
  """Whether `-m markexpr` keeps tests marked gpu or tpu and leaves out unmarked ones."""
  if not markexpr:
    return False
  expression = Expression.compile(markexpr)

  def keeps(*marks: str) -> bool:  # a test carrying exactly these markers
    return expression.evaluate(lambda name, **_: name in marks)

  return not keeps() and any(keeps(mark) for mark in HARDWARE)


def selects_aot(markexpr: str) -> bool:
  """Whether `-m markexpr` keeps tests marked aot and leaves out unmarked ones."""
  if not markexpr:
    return False
  expression = Expression.compile(markexpr)
  return (expression.evaluate(lambda name, **_: name == "aot")
          and not expression.evaluate(lambda name, **_: False))


def pytest_configure(config):
  """Sets the platform before any test module imports jax (which reads JAX_PLATFORMS once).

  Tests run on CPU (and the multi-device ones on forced host devices), also on a machine with an
  accelerator: the hardware tests alone (`-m gpu`, `-m "gpu or tpu"`) run on JAX's own choice of
  backend, without the CPU compile flags. An explicit JAX_PLATFORMS wins in both cases."""
  if not selects_hardware(config.option.markexpr):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # The compile-only targets (tests marked aot): the CUDA plugin's driver check would refuse a
  # machine without a GPU, and libtpu would lock out all but one test worker.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu in each test worker
  # A persistent XLA compilation cache shared by the test workers and the CLI subprocesses they
  # start (inherited through the environment): the kill/resume and multi-process tests compile
  # the same steps several times. Keys include the jax version, the HLO, the backend and the
  # flags, so a stale entry is never used for a different program.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
      os.environ.get("TMPDIR", "/tmp"), f"encoders-tests-xla-cache-{os.getuid()}"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  flags = os.environ.get("XLA_FLAGS", "")
  if os.environ.get("JAX_PLATFORMS") == "cpu" and "xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()


def pytest_collection_modifyitems(config, items):
  """Skips the hardware tests whose backend this run does not have, and the compile-only
  accelerator tests unless asked for (`-m aot`, with the [aot] extra), saying how to run them."""
  aot = [item for item in items if item.get_closest_marker("aot")]
  if aot:
    from experiments.aot.targets import missing_extra  # pylint: disable=import-outside-toplevel

    reason = ("compiles for GPUs and TPUs (minutes): run alone with python -m pytest -m aot "
              "tests" if not selects_aot(config.option.markexpr) else missing_extra())
    for item in aot if reason else ():
      item.add_marker(pytest.mark.skip(reason=reason))
  hardware = [item for item in items if any(item.get_closest_marker(m) for m in HARDWARE)]
  if not hardware:
    return
  import jax  # pylint: disable=import-outside-toplevel  (after pytest_configure set the platform)

  backend = jax.default_backend()
  for item in hardware:
    for mark in HARDWARE:
      if item.get_closest_marker(mark) and backend != mark:
        item.add_marker(pytest.mark.skip(
            reason=f"needs JAX's {mark} backend, this run has {backend}: run the hardware tests "
                   f"alone on a {mark.upper()} machine (python -m pytest -m {mark} tests)"))


def tiny_config(**overrides):
  """A 2-layer, 32-wide ModelConfig with an MLM head; `overrides` replace its fields."""
  from encoders.config import ModelConfig  # pylint: disable=import-outside-toplevel  (imports jax)

  base = dict(vocab_size=37, max_length=24, dim=32, num_layers=2, num_heads=4, mlp_dim=48,
              dropout_rate=0.0, head=dict(name="mlm"))
  base.update(overrides)
  return ModelConfig.from_dict(base)


@pytest.fixture
def make_config():
  return tiny_config


def random_params(model, inputs, seed: int = 0):
  """Parameters of `model` drawn with numpy (normal, std 0.1) from the shapes of its init:
  no XLA compile of the initialisers (about 3 s of CPU per model), for tests that need some
  parameters, not the initialised ones."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)
