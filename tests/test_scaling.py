"""Scale-out: meshes give the same training, FSDP shards, rules cover every axis, gradient
accumulation equals the big batch, bf16 compute with float32 master weights, remat, and the
multi-process set-up (docs/scaling.md). Multi-device cases run in one 8-device subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import listops_short
from encoders import precision, sharding
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import distributed, partitioning
from experiments.optim import make_optimizer
from experiments.steps import init_state, make_train_step
from experiments.tasks import make_task
from tests.conftest import FAST_COMPILE, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = ((8, 1, 1, 1), (2, 4, 1, 1), (2, 2, 2, 1))
# Subprocesses compile with less LLVM optimisation: ~30% faster for these tiny programs.


def tiny_run(cache_dir, mesh=(1, 1, 1, 1), **train):
  """5 steps of a 1-block ListOps classifier, batch 8, no dropout."""
  config = listops_short.get_config()
  config.data.cache_dir = str(cache_dir)
  config.data.listops.update(num_train=64, num_eval=32, min_length=8, max_length=32,
                             max_depth=3, max_args=4)
  config.model.update(dim=32, num_layers=1, num_heads=2, mlp_dim=64, dropout_rate=0.0)
  config.train.update(batch_size=8, num_steps=5, warmup_steps=1, log_every=1, eval_every=5,
                      checkpoint_every=5, async_checkpoints=False)
  config.train.update(**train)
  config.eval.update(batch_size=16, max_batches=1)
  config.mesh = dict(zip(("data", "fsdp", "tensor", "expert"), mesh))
  config.progress_bar = False
  return config


# One 8-device process: the runner's sharded state and jitted step (experiments/train.py) on a
# 1-device mesh and on each 8-device mesh, 5 steps each; and the FSDP bytes of one device.
MESH_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
import flax.linen as nn, jax, numpy as np
from jax.sharding import AxisType, Mesh
from encoders.model import Model
from encoders.sharding import MESH_AXES
from experiments import partitioning
from experiments.optim import make_optimizer
from experiments.steps import init_state, make_train_step
from experiments.tasks import make_task
from tests.test_scaling import tiny_run

config = tiny_run({cache!r})
task = make_task(config)
model = Model(task.model_config(config.model.to_dict()))
optimizer, schedule = make_optimizer(config.train)
batches = [task.train_batch(step) for step in range(5)]
example = {{"tokens": batches[0]["inputs"][:1]}}
rules = partitioning.rules()


def train(mesh):
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    make = lambda: init_state(model, optimizer, example, config.seed)
    shardings = partitioning.logical_shardings(jax.eval_shape(make), mesh, rules)
    state = jax.jit(lambda: nn.unbox(make()), out_shardings=shardings)()
    step = jax.jit(make_train_step(model, task, optimizer, schedule, {{}}),
                   in_shardings=(shardings, partitioning.batch_sharding(mesh)),
                   out_shardings=(shardings, partitioning.replicated(mesh)), donate_argnums=0)
    losses = []
    for batch in batches:
      state, metrics = step(state, partitioning.global_batch(batch, mesh))
      losses.append(float(metrics["loss"]))
  return losses, state


one_device = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1, 1), MESH_AXES,
                  axis_types=(AxisType.Auto,) * 4)
reference, reference_state = train(one_device)
out = {{"devices": jax.device_count(), "reference": reference, "runs": {{}}}}
for shape in {meshes!r}:
  losses, state = train(partitioning.make_mesh(dict(zip(MESH_AXES, shape))))
  diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(reference_state.params)))
  out["runs"]["x".join(map(str, shape))] = dict(losses=losses, param_diff=diff)
  if shape == (2, 4, 1, 1):  # FSDP 4: bytes of params and optimizer state on one device
    device = jax.devices()[0]
    for part in ("params", "opt_state"):
      leaves = jax.tree.leaves(getattr(state, part))
      out[part] = dict(total=sum(x.nbytes for x in leaves),
                       device=sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                                  if s.device == device))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """A ListOps cache written once, read by every run (also the subprocesses)."""
  path = tmp_path_factory.mktemp("cache")
  make_task(tiny_run(path))
  return path


@pytest.mark.slow
def test_meshes_train_like_one_device_and_fsdp_shards(cache):
  script = MESH_SCRIPT.format(repo=REPO, meshes=MESHES, cache=str(cache))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=REPO, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8 and len(out["reference"]) == 5
  assert out["reference"][-1] < out["reference"][0]
  for mesh, run in out["runs"].items():
    np.testing.assert_allclose(run["losses"], out["reference"], rtol=1e-5, atol=1e-5,
                               err_msg=mesh)
    assert run["param_diff"] < 1e-5, (mesh, run["param_diff"])
  for part in ("params", "opt_state"):  # 1/4 each, but for a few bias vectors (mlp, kv,
    # classes axes are not on fsdp) that make ~2% of this tiny model
    assert out[part]["device"] <= 1.1 * out[part]["total"] / 4, (part, out[part])


def test_mesh_product_must_match_devices():
  with pytest.raises(ConfigError, match=r"has 8 devices; this run has 4"):
    partitioning.mesh_shape(dict(data=2, fsdp=4), 4)
  with pytest.raises(ConfigError, match=r"mesh.pipeline is not a mesh axis"):
    partitioning.mesh_shape(dict(pipeline=2), 2)
  assert partitioning.mesh_shape(dict(data=-1, tensor=2), 8) == (4, 1, 2, 1)


def test_every_param_and_activation_axis_has_a_rule():
  ruled = {name for name, _ in sharding.DEFAULT_RULES}
  configs = [tiny_config(), tiny_config(ffn=dict(name="glu"), type_vocab_size=2,
                                       head=dict(name="mlm", tie_embeddings=False)),
             tiny_config(head=dict(name="classification", num_classes=3)),
             tiny_config(scan_layers=False)]
  for config in configs:
    boxed = jax.eval_shape(Model(config).init, jax.random.PRNGKey(0),
                           {"tokens": jnp.zeros((1, 8), jnp.int32)})["params"]
    specs = jax.tree.leaves(nn.get_partition_spec(boxed),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    names = {axis for spec in specs for axis in spec}
    assert names and names <= ruled, names - ruled
    assert all(len(spec) for spec in specs)  # every parameter has logical axes
  activations = set(sharding.HIDDEN + sharding.HEADS + sharding.MLP + sharding.LOGITS)
  assert activations <= ruled


def test_uneven_dimension_is_replicated():
  mesh = jax.sharding.AbstractMesh((1, 2, 2, 1), sharding.MESH_AXES)
  spec = jax.sharding.PartitionSpec("tensor", "fsdp")
  fitted = partitioning.fit_to_shape(jax.ShapeDtypeStruct((17, 32), jnp.float32),
                                     jax.sharding.NamedSharding(mesh, spec))
  assert fitted.spec == jax.sharding.PartitionSpec(None, "fsdp")


def _state_and_step(cache, accum: int, dtype: str = "float32", **model):
  config = tiny_run(cache, grad_accum_steps=accum, learning_rate=1e-2, warmup_steps=0)
  config.model.dtype = dtype
  config.model.update(**model)
  task = make_task(config)
  net = Model(task.model_config(config.model.to_dict()))
  optimizer, schedule = make_optimizer(config.train)
  batch = task.train_batch(0)
  state = jax.jit(lambda: nn.unbox(init_state(net, optimizer, {"tokens": batch["inputs"][:1]},
                                              0)))()
  step = jax.jit(make_train_step(net, task, optimizer, schedule, {}, "stop", accum))
  return state, step, batch


@pytest.mark.slow
def test_grad_accumulation_4x2_equals_batch_8(cache):
  """One step on a batch of 8 == 4 accumulated micro-batches of 2 (the latter also under
  dots_saveable remat, which must not change the gradients either)."""
  state, big_step, batch = _state_and_step(cache, accum=1)
  _, micro_step, _ = _state_and_step(cache, accum=4, remat="dots_saveable")
  big_state, big = big_step(state, batch)
  micro_state, micro = micro_step(state, batch)
  for name in ("loss", "accuracy", "grad_norm", "total_loss"):
    np.testing.assert_allclose(micro[name], big[name], rtol=1e-5, err_msg=name)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),  # Adam: lr 1e-2
               micro_state.params, big_state.params)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), big_state.params, state.params)
  assert np.median(jax.tree.leaves(moved)) > 1e-3


def _dot_input_dtypes(jaxpr) -> list[tuple[str, str, str]]:
  """(lhs, rhs, result) dtypes of every dot_general, sub-jaxprs (scan, remat) included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(tuple(str(v.aval.dtype) for v in (*eqn.invars, eqn.outvars[0])))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _dot_input_dtypes(inner)
  return found


@pytest.mark.parametrize("head", ["mlm", "classification"])
def test_bf16_matmuls_read_bf16_and_accumulate_in_f32(head):
  spec = dict(name=head, **({"num_classes": 3} if head == "classification" else {}))
  config = tiny_config(dtype="bfloat16", head=spec, remat="full")
  model = Model(config)
  inputs = {"tokens": jnp.ones((2, 8), jnp.int32), "mask": jnp.ones((2, 8), bool)}
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)["params"]
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, inputs)[0])(params)
  dots = _dot_input_dtypes(jaxpr.jaxpr)
  assert len(dots) >= 6  # q, k, v, scores, values, out, wi, wo, head
  assert all(d == ("bfloat16", "bfloat16", "float32") for d in dots), dots


def test_bf16_backward_matmuls_also_read_bf16():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (8, 5))

  def loss(x, w, dtype):
    return jnp.sum(precision.einsum("...a,ab->...b", x, w, dtype) ** 2)

  grad = jax.grad(loss, (0, 1))
  dots = _dot_input_dtypes(jax.make_jaxpr(grad, static_argnums=2)(x, w, jnp.bfloat16).jaxpr)
  assert dots == [("bfloat16", "bfloat16", "float32")] * 3  # forward, d/dx, d/dw
  for low, high in zip(grad(x, w, jnp.bfloat16), grad(x, w, jnp.float32)):
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, high, rtol=0.05, atol=0.05 * float(jnp.abs(high).max()))


def test_bf16_run_trains_and_keeps_float32_master_params(cache):
  state, step, batch = _state_and_step(cache, accum=1, dtype="bfloat16", remat="full")
  losses = []
  for _ in range(8):  # overfit one batch
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 0.15, losses
  assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
          if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("scan", [True, False])
def test_remat_wraps_every_block(scan):
  """The policies' gradients are checked in the accumulation and bf16 tests; here: the blocks
  run under jax.checkpoint (one per scanned unit, one per block unscanned) with the policy."""
  inputs = {"tokens": jnp.ones((2, 8), jnp.int32)}
  for policy in ("none", "full", "dots_saveable"):
    model = Model(tiny_config(remat=policy, scan_layers=scan))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)["params"]
    jaxpr = jax.make_jaxpr(lambda p, m=model: m.apply({"params": p}, inputs)[0])(params)
    found = _checkpoint_policies(jaxpr.jaxpr)
    assert len(found) == (0 if policy == "none" else 1 if scan else 2), (policy, found)
    if policy == "dots_saveable":
      assert all("dotssaveable" in name.replace("_", "").lower() for name in found), found


def _checkpoint_policies(jaxpr) -> list[str]:
  """The policy of every jax.checkpoint in `jaxpr`, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("checkpoint", "remat2"):
      found.append(str(getattr(eqn.params.get("policy"), "__name__", eqn.params.get("policy"))))
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        found += _checkpoint_policies(inner)
  return found


def test_remat_policy_is_validated():
  with pytest.raises(ConfigError, match=r"model.remat='some'; allowed: none, full"):
    tiny_config(remat="some")


def test_distributed_settings_from_flags_env_and_clusters():
  assert distributed.resolve(environ={}) is None
  assert distributed.resolve("10.0.0.1:1234", 2, 1, environ={}) == dict(
      coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)
  env = {"ENCODERS_COORDINATOR": "h:1", "ENCODERS_NUM_PROCESSES": "4",
         "ENCODERS_PROCESS_ID": "3"}
  assert distributed.resolve(environ=env)["process_id"] == 3
  assert distributed.resolve(process_id=0, environ=env)["process_id"] == 0  # flag wins
  slurm = dict.fromkeys(("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                         "SLURM_PROCID"), "1")
  assert distributed.resolve(environ=slurm) == {}  # jax.distributed auto-detects
  with pytest.raises(ConfigError, match="--num_processes"):
    distributed.resolve("h:1", environ={})
  with pytest.raises(ConfigError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
    distributed.resolve("h:1", 2, 2, environ={})


def test_batch_must_split_into_micro_batches_per_device():
  mesh = partitioning.make_mesh(dict(data=-1))
  with pytest.raises(ConfigError, match="grad_accum_steps"):
    partitioning.check_batch_divisible(6, mesh, "train.batch_size", 4)
