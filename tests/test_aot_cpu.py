"""The compile-report pieces that need no accelerator compiler: target names, our FLOP count of
a traced step (every scanned layer, declared kernel work), the batch search, the fit line. The
compiles themselves: tests/test_aot.py (marked aot)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from experiments import costs
from experiments.aot import compile as aot_compile
from experiments.aot import report, targets


@pytest.mark.parametrize("name, want", [("h100", ("h100", "1x1x1", 1)),
                                        ("h200:8", ("h200", "1x1x8", 8)),
                                        ("v5e:2x2", ("v5e", "v5e:2x2", 4)),
                                        ("v4:2x2x1", ("v4", "v4:2x2x1", 4))])
def test_target_names(name, want):
  assert targets.parse(name) == want


@pytest.mark.parametrize("name, message", [
    ("b200", "unknown chip 'b200'; allowed: h100, h200, a100"),
    ("h100:0", "a GPU count must be a positive integer"),
    ("v5e", "a TPU target needs a topology shape"),
    ("v5e:2xa", "a TPU target needs a topology shape")])
def test_a_bad_target_is_one_line(name, message):
  with pytest.raises(ConfigError, match=message) as error:
    targets.parse(name)
  assert "\n" not in str(error.value)


def test_gpu_target_config_names_the_chip_and_its_memory():
  proto = targets.gpu_target_config(targets.CHIPS["h200"])
  assert 'device_description_str: "NVIDIA H200 141GB HBM3e"' in proto
  assert "device_memory_size: 151397597184" in proto and "core_count: 132" in proto


def model_step_cost(scan_layers: bool) -> tuple[float, float]:
  """(our FLOPs, XLA's FLOPs) of an encoder's forward+backward, 4 layers."""
  config = ModelConfig.from_dict(dict(vocab_size=64, max_length=32, dim=32, num_layers=4,
                                      num_heads=2, mlp_dim=64, scan_layers=scan_layers,
                                      head=dict(name="mlm")))
  from encoders.model import Model  # pylint: disable=import-outside-toplevel

  model = Model(config)
  inputs = {"tokens": jnp.ones((2, 32), jnp.int32), "mask": jnp.ones((2, 32), bool)}
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)["params"]

  def loss(params):
    logits, _ = model.apply({"params": params}, inputs)
    return jnp.sum(logits)

  traced = jax.jit(jax.grad(loss)).trace(params)
  ours = costs.program_cost(traced.jaxpr).flops
  return ours, costs.compiled_cost(traced.lower().compile())["xla_flops_per_step"]


def test_our_flop_count_sees_every_scanned_layer():
  scanned, xla_scanned = model_step_cost(True)
  unrolled, xla_unrolled = model_step_cost(False)
  assert scanned == unrolled  # the same products, however the stack is compiled
  assert xla_scanned < 0.6 * xla_unrolled  # XLA counts the scanned body once
  # the matrix products of 4 layers fwd+bwd: at least 3 x 2 x tokens x parameters of the blocks
  assert scanned > 3 * 2 * 64 * 4 * (4 * 32 * 32 + 2 * 32 * 64)


def test_declared_kernel_work_is_counted_forward_once_and_backward_twice():
  """An interpreted Pallas kernel's attention, declared by its dispatch's name scope."""
  from encoders.attention.kernels import dispatch  # pylint: disable=import-outside-toplevel

  b, n, h, d = 2, 128, 2, 16
  q = jnp.ones((b, n, h, d))

  def loss(q):
    return dispatch.dense(q, q, q, implementation="pallas_gpu", interpret=True,
                                  kernel_block_size=64).sum()

  forward = costs.program_cost(jax.jit(loss).trace(q).jaxpr).flops
  both = costs.program_cost(jax.jit(jax.grad(loss)).trace(q).jaxpr).flops
  attention = 4 * b * h * d * n * n
  assert forward == attention
  # twice that backward, plus the small products outside the kernels (the backward's
  # rowwise sum of o * do is one)
  assert 3 * attention <= both <= 1.01 * 3 * attention


def test_find_batch_doubles_then_bisects(monkeypatch):
  calls = []

  def fits(config, target, mock_data=False):
    del target, mock_data
    batch = config.train.batch_size
    calls.append(batch)
    return batch <= 37, {"steps": [{"memory": {"total_bytes": batch * 2.0**30}}]}

  class FakeTarget:
    devices = (jax.devices()[0],)

  monkeypatch.setattr(aot_compile, "fits", fits)
  from configs import mlm  # pylint: disable=import-outside-toplevel

  config = mlm.get_config("small")
  config.train.batch_size = 8
  best, probes = aot_compile.find_batch(config, FakeTarget())
  assert best == 37
  assert calls[:4] == [8, 16, 32, 64]  # doubling from the config's batch to the first miss
  assert [p["per_device_batch"] for p in probes] == calls
  config.train.batch_size = 64
  calls.clear()
  assert aot_compile.find_batch(config, FakeTarget())[0] == 37
  assert calls[:2] == [64, 32]  # halving to the first fit, then bisection


@pytest.mark.parametrize("total, want", [(48 * 2**30, "fits: 60% of 80.00 GiB"),
                                         (92.3 * 2**30, "does not fit by 12.30 GiB")])
def test_fit_line(total, want):
  line = report.fit_line({"total_bytes": total, "device_memory_bytes": 80 * 2**30,
                          "fits": total <= 80 * 2**30})
  assert line.startswith(want)


def test_roofline_is_the_slower_of_compute_and_memory():
  compute = aot_compile.roofline(1e12, 1e9, 1e6, peak=1e14, bandwidth=1e12)
  assert compute["bound"] == "compute" and compute["estimated_step_seconds"] == 1e-2
  assert compute["estimated_mfu"] == 1.0
  memory = aot_compile.roofline(1e12, 1e11, 1e6, peak=1e14, bandwidth=1e12)
  assert memory["bound"] == "memory" and memory["estimated_step_seconds"] == 0.1
  assert np.isclose(memory["estimated_mfu"], 0.1)
