"""Runs of unchanged configs continue bit-for-bit across code changes, against golden files that
earlier code wrote (tests/data/resume_golden/, written by make_resume_golden.py beside them; see
its docstring for when and how to regenerate them):

- the dense family's Orbax checkpoint, saved after 3 steps by the runner's `Checkpoints`,
  restores into today's train state and the next 3 steps' losses are bit-identical (a few
  seconds: one step compiled);
- for every family (dense, MoE, the S4D mixer, local block-sparse attention; slow, about 30 s
  from a cold compile cache): the train state's tree (paths, shapes, dtypes), the initial
  parameters (SHA-256) and all 6 steps' losses are bit-identical, so a run resumed from any of
  their checkpoints continues as it would have (S4D: its tree only, its numbers changed on
  purpose: `CHANGED_ON_PURPOSE`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "resume_golden")


def load_maker():
  spec = importlib.util.spec_from_file_location(
      "make_resume_golden", os.path.join(HERE, "make_resume_golden.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


maker = load_maker()
with open(os.path.join(HERE, "golden.json"), encoding="utf-8") as golden_file:
  GOLDEN = json.load(golden_file)


# Families whose numbers changed on purpose after the golden files were written, and why: their
# state's tree must still match (their old checkpoints restore), not their values.
CHANGED_ON_PURPOSE = {
    "s4d": "S4D's output init, SSM learning-rate rule and decayed C, D now follow the S4 "
           "reference (docs/baselines.md, section 9)",
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(maker.FAMILIES))
def test_unchanged_config_inits_and_trains_bit_for_bit(family):
  golden = GOLDEN["families"][family]
  assert golden["model"] == {**maker.BASE, **maker.FAMILIES[family]}
  train_step, state, batch = maker.setup(family)
  assert maker.tree_entries(state) == golden["tree"]
  if family in CHANGED_ON_PURPOSE:
    assert maker.digest(state.params) != golden["init_params_sha256"]  # else: drop the entry
    return
  assert maker.digest(state.params) == golden["init_params_sha256"]
  _, losses = maker.run_steps(train_step, state, batch, len(golden["losses"]))
  assert losses == golden["losses"]


def test_old_checkpoint_resumes_bit_for_bit(tmp_path):
  from experiments.checkpoints import Checkpoints  # pylint: disable=import-outside-toplevel
  family, saved = maker.CHECKPOINTED, GOLDEN["saved_step"]
  directory = tmp_path / family
  shutil.copytree(os.path.join(HERE, family), directory)  # restoring must not touch the fixture
  train_step, abstract_state, batch = maker.setup(family, abstract=True)
  checkpoints = Checkpoints(directory, save_every=1, keep=1, async_save=False)
  restored = checkpoints.restore_latest(abstract_state)
  checkpoints.close()
  assert restored is not None and int(restored.step) == saved
  _, losses = maker.run_steps(train_step, restored, batch, GOLDEN["resumed_steps"])
  assert losses == GOLDEN["families"][family]["losses"][saved:]
