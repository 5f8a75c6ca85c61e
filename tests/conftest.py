"""Shared fixtures: a tiny model config builder."""

from __future__ import annotations

import os

import pytest

# Tests run on CPU; keep XLA from grabbing every core for intra-op threads of tiny ops.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent XLA compilation cache shared by the test workers and the CLI subprocesses they
# start (inherited through the environment): the kill/resume and multi-process tests compile
# the same steps several times. Keys include the jax version, the HLO and the flags, so a stale
# entry is never used for a different program.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"encoders-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Tests compile hundreds of tiny programs and run each a few times: LLVM's optimisation passes
# cost more than they save there (the suite runs about twice as fast without them). Inherited by
# the CLI subprocesses (add it where a test sets its own XLA_FLAGS); benchmarks and real runs
# keep XLA's defaults.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

from encoders.config import ModelConfig  # noqa: E402


def tiny_config(**overrides) -> ModelConfig:
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
