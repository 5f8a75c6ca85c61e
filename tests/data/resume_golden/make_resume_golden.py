"""Writes the resume golden files of tests/test_resume_golden.py: for a few model families, a
tiny MLM model trained with the runner's train step (experiments/steps.py, experiments/optim.py:
AdamW with warmup and clipping, dropout on) on a synthetic batch for `SAVED_STEP` +
`RESUMED_STEPS` steps, and `golden.json` with each family's train-state tree (paths, shapes,
dtypes), a SHA-256 of its initial parameters and the bit patterns of every step's loss. The
first family's state after `SAVED_STEP` steps is also saved as an Orbax checkpoint by the
runner's `Checkpoints` (`dense/`, about 150 KB; one is enough to prove the checkpoint format,
the hashes and losses prove the other families' init and updates).

Run it deliberately, from the repository root, with the code whose checkpoints later code must
resume (it wrote the committed files at commit e050bc0, before the structure pass that moved
the variants' runner hooks and kernels):

    JAX_PLATFORMS=cpu python tests/data/resume_golden/make_resume_golden.py

The XLA flags are the test suite's (tests/conftest.py FAST_COMPILE), so that the test compiles
the same programs; a different jax version or CPU may round differently, which the test then
reports as a failure to look into, not to paper over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
HERE = os.path.dirname(os.path.abspath(__file__))
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
SAVED_STEP, RESUMED_STEPS = 3, 3
BATCH, LENGTH, VOCAB = 2, 16, 37
BASE = dict(vocab_size=VOCAB, max_length=LENGTH, dim=16, num_layers=1, num_heads=2, mlp_dim=32,
            dropout_rate=0.1, head=dict(name="mlm"))
# family -> model overrides: a dense BERT-like encoder, a top-2 MoE FFN (with its aux losses in
# the objective), an SSM mixer and block-sparse local attention.
FAMILIES = {
    "dense": {},
    "moe": dict(ffn=dict(name="moe", num_experts=4, top_k=2, expert_dim=16)),
    "s4d": dict(attention=dict(name="s4d")),
    "local": dict(attention=dict(name="local", block_size=4, window=1)),
}
CHECKPOINTED = "dense"  # the family whose state after SAVED_STEP steps is an Orbax checkpoint
AUX_LOSS_WEIGHTS = {"moe": {"load_balance_loss": 0.01, "router_z_loss": 0.001}}


def setup(family: str, abstract: bool = False):
  """(train_step, initial state, batch) of one family, built with the runner's pieces; with
  `abstract`, the state's ShapeDtypeStructs (nothing initialised or compiled but the step)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel  (after the XLA flags)
  import jax  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel

  from experiments import optim, steps  # pylint: disable=import-outside-toplevel
  from experiments.bench import synthetic  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict(dict(grad_clip_norm=1.0))
  train = synthetic.train_config(config)
  train.update(learning_rate=1e-2, warmup_steps=2)  # large steps: a changed update shows
  task = synthetic.SyntheticMLM(config, VOCAB, num_predict=4, predict="masked")
  model = task.build_model(task.model_config({**BASE, **FAMILIES[family]}))
  optimizer, schedule = optim.make_optimizer(train)
  batch = task.batch(BATCH, LENGTH, seed=0)
  example, _ = task.prepare(batch, jax.random.PRNGKey(0), train=True)
  init = lambda: steps.init_state(model, optimizer, example, 0)  # noqa: E731
  state = jax.eval_shape(init) if abstract else jax.jit(init)()
  state = state.replace(params=nn.unbox(state.params), opt_state=nn.unbox(state.opt_state))
  train_step = jax.jit(steps.make_train_step(model, task, optimizer, schedule,
                                             AUX_LOSS_WEIGHTS.get(family, {})))
  return train_step, state, batch


def tree_entries(tree) -> list[str]:
  """"path shape dtype" of every leaf, in the tree's order."""
  import jax  # pylint: disable=import-outside-toplevel
  return [f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype}"
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def digest(tree) -> str:
  """SHA-256 of every leaf's bytes in tree order."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def loss_bits(metrics) -> str:
  """The step's loss as the hex of its float32 bits (bit-for-bit comparison)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.asarray(metrics["loss"], np.float32).tobytes().hex()


def run_steps(train_step, state, batch, count: int):
  losses = []
  for _ in range(count):
    state, metrics = train_step(state, batch)
    losses.append(loss_bits(metrics))
  return state, losses


def main() -> None:
  from experiments.checkpoints import Checkpoints  # pylint: disable=import-outside-toplevel
  golden = {"saved_step": SAVED_STEP, "resumed_steps": RESUMED_STEPS, "families": {}}
  for family in FAMILIES:
    train_step, state, batch = setup(family)
    init_digest = digest(state.params)
    state, losses = run_steps(train_step, state, batch, SAVED_STEP)
    if family == CHECKPOINTED:
      directory = os.path.join(HERE, family)
      shutil.rmtree(directory, ignore_errors=True)
      checkpoints = Checkpoints(directory, save_every=1, keep=1, async_save=False)
      checkpoints.save(SAVED_STEP, state, force=True)
      checkpoints.close()
    _, more = run_steps(train_step, state, batch, RESUMED_STEPS)
    golden["families"][family] = dict(
        model={**BASE, **FAMILIES[family]}, tree=tree_entries(state),
        init_params_sha256=init_digest, losses=losses + more)
    print(family, len(tree_entries(state)), "leaves, losses", losses, flush=True)
  with open(os.path.join(HERE, "golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f, indent=1)
    f.write("\n")


if __name__ == "__main__":
  flags = os.environ.get("XLA_FLAGS", "")
  if FAST_COMPILE not in flags:  # the suite's flags, read by jax at import: set them first
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()
  sys.path.insert(0, ROOT)
  main()
