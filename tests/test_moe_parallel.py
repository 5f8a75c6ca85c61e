"""The runner with MoE, and expert parallelism on 8 fake CPU devices.

A dense run's checkpoint is upcycled into an MoE run: its first checkpoint holds exactly the
(Drop-)upcycled params; aux metrics reach metrics.jsonl. In a subprocess with mesh
data=2 x expert=4: forward and gradients equal the one-device result for both dispatch paths,
the same upcycled 5-step run gives the one-device losses, and its checkpoint restores every
expert's own weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from encoders.moe import upcycle
from experiments import init_from
from experiments.metrics import read_jsonl
from experiments.tasks import make_task
from experiments.train import train_and_evaluate
from tests.conftest import FAST_COMPILE
from tests.test_train import REPO, tiny_listops

pytestmark = pytest.mark.slow
EXPERT_MESH = dict(data=2, fsdp=1, tensor=1, expert=4)
KERNEL = ("encoder", "blocks", "ffn", "wi", "kernel")  # [layers, experts, embed, mlp]


def dense_run(cache):
  return tiny_listops(cache, num_steps=1, eval_every=1, checkpoint_every=1)


def moe_run(cache, dense_dir, mesh=None):
  """5 steps from the upcycled dense run; lr(step 0) = 0 (warmup), so checkpoint 1 holds the
  upcycled params unchanged."""
  config = tiny_listops(cache, num_steps=5, eval_every=5, checkpoint_every=1, keep_checkpoints=5)
  config.model.update(dropout_rate=0.0)
  config.model.ffn = dict(name="moe", num_experts=8, dispatch="capacity")
  config.train.aux_loss_weights = dict(load_balance_loss=0.01, router_z_loss=0.001)
  config.init_from.update(workdir=str(dense_dir), drop_fraction=0.25)  # distinct experts
  if mesh:
    config.mesh = mesh
  return config


SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, orbax.checkpoint as ocp
from encoders.model import Model
from experiments import partitioning
from experiments.train import train_and_evaluate
from tests.conftest import tiny_config
from tests.test_moe_parallel import EXPERT_MESH, KERNEL, moe_run

out = {{"devices": jax.device_count(), "max_diff": {{}}}}
mesh = partitioning.make_mesh(EXPERT_MESH)
rules = partitioning.rules()
rng = np.random.default_rng(0)
batch = {{"tokens": jnp.asarray(rng.integers(4, 37, (4, 16)), jnp.int32),
          "mask": jnp.asarray(np.arange(16)[None] < np.array([[16], [12], [16], [9]]))}}
for dispatch in ("capacity", "dropless"):
  model = Model(tiny_config(num_layers=1, ffn=dict(name="moe", num_experts=8,
                                                     dispatch=dispatch)))
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), batch))["params"]

  def loss(p, b):
    logits, aux = model.apply({{"params": p}}, b)
    return jnp.mean(logits ** 2) + aux["load_balance_loss"] + aux["router_z_loss"]

  one = jax.jit(jax.value_and_grad(loss))(params, batch)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)["params"]
    shardings = partitioning.logical_shardings(abstract, mesh, rules)
    sharded = jax.device_put(params, shardings)
    many = jax.jit(jax.value_and_grad(loss))(sharded, jax.device_put(
        batch, partitioning.batch_sharding(mesh)))
  kernel = sharded["encoder"]["blocks"]["ffn"]["wi"]["kernel"]
  out["kernel_spec"] = str(kernel.sharding.spec)
  out["max_diff"][dispatch] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)))

result = train_and_evaluate(moe_run(sys.argv[2], sys.argv[3], EXPERT_MESH), sys.argv[1])
out["eval"] = result.metrics
with ocp.CheckpointManager(sys.argv[1] + "/checkpoints") as manager:
  restored = manager.restore(5, args=ocp.args.StandardRestore())["params"]
node = restored
for key in KERNEL:
  node = node[key]
out["restored_spec"] = str(node.sharding.spec)
out["restored_expert_sums"] = np.asarray(node).sum(axis=(0, 2, 3)).tolist()
print(json.dumps(out))
"""


def train_records(workdir):
  return {r["step"]: r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if r["split"] == "train"}


def restore_params(workdir, step):
  """A checkpoint's params, restored onto this process's one device."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                             item_handlers=ocp.StandardCheckpointHandler()) as manager:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step))
    return manager.restore(step, args=ocp.args.StandardRestore(target))["params"]


def kernel(params):
  for key in KERNEL:
    params = params[key]
  return np.asarray(params)


def test_upcycled_run_and_expert_parallel_run_match(tmp_path):
  cache, dense_dir = tmp_path / "cache", tmp_path / "dense"
  one_dir, many_dir = tmp_path / "one", tmp_path / "many"
  train_and_evaluate(dense_run(cache), str(dense_dir))
  one_eval = train_and_evaluate(moe_run(cache, dense_dir), str(one_dir)).metrics

  # Upcycling from the runner's dense checkpoint.
  config = moe_run(cache, dense_dir)
  task = make_task(config)
  source_model, dense_params = init_from.source_params(str(dense_dir))
  dense_config = task.model_config(source_model)
  moe_config = task.model_config(config.model.to_dict())
  jax.tree.map(np.testing.assert_array_equal, restore_params(one_dir, 1),
               upcycle.upcycle(dense_params, dense_config, moe_config, jax.random.PRNGKey(0),
                               drop_fraction=0.25))
  # (that upcycle(..., drop_fraction=0) computes the dense function: tests/test_moe.py)
  one = train_records(one_dir)
  for name in ("aux/load_balance_loss", "aux/router_z_loss", "aux/dropped_fraction",
               "aux/router_entropy", "aux/expert_load/0", "aux/expert_load/7"):
    assert name in one[5] and np.isfinite(one[5][name]), name
  np.testing.assert_allclose(sum(one[5][f"aux/expert_load/{e}"] for e in range(8)), 1.0,
                             rtol=1e-5)

  # The same on 8 devices with experts split 4 ways.
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=REPO), str(many_dir),
                         str(cache), str(dense_dir)], env=env, capture_output=True, text=True,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  # forward + gradients, both dispatch paths, experts split over the `expert` mesh axis
  assert "expert" in out["kernel_spec"], out["kernel_spec"]
  for dispatch, diff in out["max_diff"].items():
    assert diff < 1e-5, (dispatch, diff)
  # the 5-step run: same losses and aux terms
  many = train_records(many_dir)
  assert sorted(one) == sorted(many) == [1, 2, 3, 4, 5]
  for step in one:
    for key in ("loss", "aux/load_balance_loss", "aux/router_z_loss", "aux/expert_load/0"):
      np.testing.assert_allclose(many[step][key], one[step][key], atol=1e-5, err_msg=key)
  np.testing.assert_allclose(out["eval"]["loss"], one_eval["loss"], atol=1e-5)
  # the expert-parallel checkpoint restores sharded over experts, each expert its own weights
  assert "expert" in out["restored_spec"], out["restored_spec"]
  one_kernel, many_kernel = kernel(restore_params(one_dir, 5)), kernel(restore_params(many_dir, 5))
  np.testing.assert_allclose(many_kernel, one_kernel, atol=1e-5)
  np.testing.assert_allclose(out["restored_expert_sums"], one_kernel.sum(axis=(0, 2, 3)),
                             rtol=1e-4)
  flat = many_kernel.transpose(1, 0, 2, 3).reshape(8, -1)
  assert all(not np.allclose(flat[a], flat[b]) for a in range(8) for b in range(a + 1, 8))
