"""Every kernel compiled for the chips it runs on, on this CPU machine (marked `aot`: needs the
[aot] extra, run alone with `python -m pytest -m aot tests`; .ci/run does).

Each attention cell is one layer's forward and backward compiled for an H100 (Triton through
ptxas, cuDNN) or a TPU v5e (Mosaic), with the batch split over the target's devices; the test
fails if the compiled program lacks the kernel's own call (a silent fall back to XLA). Then MoE's
grouped matmuls, and the runner's MLM train step over a data x fsdp mesh (experiments/aot).
What compiling proves and what it does not: experiments/aot/compile.py.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from encoders import target as target_lib
from encoders.config import ModelConfig
from experiments import costs, partitioning
from experiments.aot import compile as aot_compile
from experiments.aot import targets

pytestmark = pytest.mark.aot

# The kernel's own call in the compiled program, by implementation.
KERNEL_CALL = {"pallas_gpu": "__gpu$xla.gpu.triton", "cudnn": "__cudnn$fmha",
               "splash": "tpu_custom_call", "megablox": "tpu_custom_call"}
K = 1024


@pytest.fixture(autouse=True, scope="module")
def no_persistent_cache():
  """Compile-only executables cannot be read back from JAX's persistent cache: skip it here."""
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  yield
  jax.config.update("jax_enable_compilation_cache", enabled)


@functools.cache
def resolved(name: str) -> targets.Target:
  return targets.resolve(name)


def compile_layer(target_name: str, kind: str, spec: dict, length: int, *, packed=False,
                  dim=256, heads=4, devices=None, batch=None, **model):
  """(compiled HLO text, the layer's recorded choices, per-device temporary bytes) of one `kind`
  layer's fwd+bwd, the batch (`batch` rows, default one per device) split over the target's
  devices (or its first `devices`)."""
  target = resolved(target_name)
  mesh = partitioning.make_mesh({"data": -1}, target.devices[:devices])
  config = ModelConfig.from_dict(dict(vocab_size=11, max_length=length, dim=dim,
                                      num_heads=heads, head_dim=dim // heads, num_layers=1,
                                      mlp_dim=4 * dim, dtype="bfloat16", **{kind: spec}, **model))
  layer = config.build(kind)
  batch = batch or mesh.size
  rows = NamedSharding(mesh, P(("data", "fsdp")))
  x = jax.ShapeDtypeStruct((batch, length, dim), jnp.bfloat16, sharding=rows)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_, sharding=rows)
  segments = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=rows)
  key = jax.random.PRNGKey(0)  # outside the mesh: its devices run nothing
  with jax.set_mesh(mesh), target_lib.record() as choices:
    shapes = nn.unbox(jax.eval_shape(layer.init, key, x))
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                         sharding=partitioning.replicated(mesh)),
                          shapes)

    def loss(params, x, mask, segments):
      if kind == "ffn":
        out, _ = layer.apply(params, x)
      else:
        out = layer.apply(params, x, mask=mask, segment_ids=segments if packed else None)
      return jnp.sum(out.astype(jnp.float32))

    traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(params, x, mask, segments)
    compiled = traced.lower().compile()
  return compiled.as_text(), choices, costs.temp_bytes(compiled.memory_analysis())


GLOBAL = dict(name="longformer", block_size=128, window_tokens=256, global_tokens=(0, 1))
BIGBIRD = dict(name="bigbird", block_size=128)
LOCAL = dict(name="local", block_size=128, window_tokens=256)
CELLS = [  # (target, attention, lengths, packed)
    ("h100", dict(name="dense", implementation="cudnn"), (4 * K, 16 * K), False),
    ("h100", dict(name="dense", implementation="pallas_gpu"), (4 * K, 16 * K), False),
    ("h100", {**LOCAL, "implementation": "pallas_gpu"}, (4 * K, 16 * K, 64 * K), False),
    ("h100", {**GLOBAL, "implementation": "pallas_gpu"}, (4 * K, 16 * K), False),
    ("h100", {**BIGBIRD, "implementation": "pallas_gpu"}, (4 * K, 16 * K), False),
    ("h100", {**LOCAL, "implementation": "pallas_gpu"}, (4 * K,), True),
    ("v5e:2x2", dict(name="dense", implementation="splash"), (4 * K, 16 * K), False),
    ("v5e:2x2", {**LOCAL, "implementation": "splash"}, (4 * K, 16 * K, 64 * K), False),
    ("v5e:2x2", {**GLOBAL, "implementation": "splash"}, (4 * K, 16 * K, 64 * K), False),
    ("v5e:2x2", {**BIGBIRD, "implementation": "splash"}, (4 * K, 16 * K, 64 * K), False),
    ("v5e:2x2", {**LOCAL, "implementation": "splash"}, (4 * K,), True),
]
PARAMS = [pytest.param(t, a, n, packed, id=f"{t}-{a['name']}-{a['implementation']}-{n // K}K"
                       + ("-packed" if packed else ""))
          for t, a, lengths, packed in CELLS for n in lengths]


@pytest.mark.parametrize("target_name, attention, length, packed", PARAMS)
def test_attention_kernel_compiles_for_its_chip(target_name, attention, length, packed):
  text, choices, _ = compile_layer(target_name, "attention", attention, length, packed=packed)
  kernel = attention["implementation"]
  assert KERNEL_CALL[kernel] in text, f"no {kernel} call in the compiled program"
  assert {c.chosen for c in choices if c.kind == "attention"} == {kernel}


@pytest.mark.parametrize("target_name, kernel", [("h100:8", "pallas_gpu"), ("v5e:2x2", "splash")])
def test_kernels_run_per_shard_of_the_batch(target_name, kernel):
  """Under a data-parallel mesh the kernel runs on each device's rows (`on_shards`): no operand
  is gathered around its call, and the per-device temporaries shrink with the devices (XLA
  cannot partition a Pallas call: without shard_map it gathers q, k, v and every device
  computes the whole batch)."""
  spec = {**LOCAL, "implementation": kernel}
  devices = len(resolved(target_name).devices)
  text, _, split = compile_layer(target_name, "attention", spec, 4 * K, batch=2 * devices)
  assert KERNEL_CALL[kernel] in text
  assert "all-gather" not in text, "an all-gather in the sharded kernel's program"
  _, _, alone = compile_layer(target_name, "attention", spec, 4 * K, batch=2 * devices,
                              devices=1)
  assert 0 < split and split * devices <= 2 * alone, (split, alone)


@pytest.mark.parametrize("target_name, want", [("h100", "pallas_gpu"), ("v5e:2x2", "splash")])
def test_auto_picks_the_targets_kernel_on_a_cpu_machine(target_name, want):
  text, choices, _ = compile_layer(target_name, "attention", dict(name="local", block_size=128),
                                   4 * K)
  assert [c.chosen for c in choices] == [want]
  assert KERNEL_CALL[want] in text


MOE = dict(name="moe", num_experts=4, dispatch="dropless", block_size=128)


def test_megablox_moe_compiles_for_v5e():
  """On one chip: megablox is not partitioned (auto takes blocked on a larger mesh)."""
  text, choices, _ = compile_layer("v5e:2x2", "ffn", MOE, 512, devices=1)
  assert [c.chosen for c in choices if c.kind == "moe"] == ["megablox"]
  assert KERNEL_CALL["megablox"] in text
  _, choices, _ = compile_layer("v5e:2x2", "ffn", MOE, 512)
  assert [(c.chosen, c.reason) for c in choices if c.kind == "moe"] == [
      ("blocked", "it is not partitioned: the mesh has 4 devices")]


def test_ragged_moe_is_an_e_times_dense_product_on_h100():
  """XLA:GPU lowers ragged_dot to one product against all experts' weights stacked ([rows,
  E * dim]): E times blocked's work, so `auto` takes blocked on GPUs. If a jax release lowers it
  natively, this fails and `auto` should be revisited."""
  moe = {**MOE, "num_experts": 8}
  _, choices, blocked = compile_layer("h100", "ffn", moe, 512, devices=1, batch=8)
  assert [c.chosen for c in choices if c.kind == "moe"] == ["blocked"]
  text, _, ragged = compile_layer("h100", "ffn", {**moe, "grouped_matmul": "ragged"}, 512,
                                  devices=1, batch=8)
  stacked = 8 * 256  # experts x dim
  assert re.search(rf"bf16\[\d+,{stacked}\]", text), "no [rows, E * dim] operand"
  assert ragged > 2 * blocked, (ragged, blocked)


def mlm_config():
  from configs import mlm  # pylint: disable=import-outside-toplevel

  config = mlm.get_config("small")
  config.model.dtype = "bfloat16"
  return config


@pytest.mark.parametrize("target_name, mesh, kernel", [
    ("v5e:2x2", dict(data=2, fsdp=2), "splash"),
    # packed rows: cuDNN through jax takes no segment ids, so dense runs on pallas_gpu
    ("h100:8", dict(data=4, fsdp=2), "pallas_gpu")])
def test_mlm_train_step_compiles_over_a_data_fsdp_mesh(target_name, mesh, kernel):
  config = mlm_config()
  config.mesh.update(mesh)
  report = aot_compile.compile_steps(config, resolved(target_name))
  for step in report["steps"]:
    assert step["compiled"], step.get("error")
    assert step["memory"]["fits"]
    assert {c["chosen"] for c in step["choices"]} == {kernel}
    assert step["estimated_step_seconds"] > 0 and 0 < step["estimated_mfu"] <= 1
  assert report["mesh"]["data"] * report["mesh"]["fsdp"] == len(resolved(target_name).devices)


def test_cudnn_attention_work_is_counted():
  """cuDNN's fused attention is one call XLA:GPU reports no FLOPs for: ours counts it."""
  mesh = partitioning.make_mesh({"data": -1}, resolved("h100").devices)
  q = jax.ShapeDtypeStruct((1, 1024, 4, 64), jnp.bfloat16)

  def loss(q):
    return jnp.sum(jax.nn.dot_product_attention(q, q, q, implementation="cudnn"))

  with jax.set_mesh(mesh):
    traced = jax.jit(jax.grad(loss)).trace(q)
  attention = 4 * 4 * 1024 * 1024 * 64  # batch x heads x q x k x head_dim x 4
  assert costs.program_cost(traced.jaxpr).flops == 3 * attention  # forward + 2 x backward
