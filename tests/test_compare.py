"""Studies (experiments/study.py, the `experiments.compare` command) on tiny grids."""

from __future__ import annotations

import csv
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from configs import quickstart
from configs.bench import attention as attention_bench
from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.model import Model
from experiments import study as studies

pytestmark = pytest.mark.slow


def tiny_study(tmp_path, grid) -> ml_collections.ConfigDict:
  study = ml_collections.ConfigDict()
  study.name = "tiny"
  study.base = "configs/listops_short.py"
  study.overrides = ml_collections.ConfigDict({
      "data.cache_dir": str(tmp_path / "cache"), "data.listops.num_train": 64,
      "data.listops.num_eval": 32, "data.listops.min_length": 8,
      "data.listops.max_length": 32, "model.dim": 32, "model.num_layers": 1,
      "model.mlp_dim": 64, "train.batch_size": 8, "train.num_steps": 4,
      "train.warmup_steps": 1, "train.log_every": 1, "train.eval_every": 2,
      "train.checkpoint_every": 4, "eval.batch_size": 16, "progress_bar": False},
      allow_dotted_keys=True)
  study.grid = ml_collections.ConfigDict(grid, allow_dotted_keys=True)
  study.primary_metric = "accuracy"
  study.mode = "max"
  study.param_tolerance = 0.10
  return study


def test_grid_runs_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  study = tiny_study(tmp_path, {"model.ffn.name": ["mlp", "glu"], "seed": [0, 1]})
  workdir = str(tmp_path / "study")
  rows = studies.run_study(study, workdir)
  assert len(rows) == 4
  with open(os.path.join(workdir, "results.csv"), encoding="utf-8") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4
  for row in table:
    for column in ("model.ffn.name", "seed", "params", "final_accuracy", "best_accuracy",
                   "steps_per_sec", "tokens_per_sec", "peak_memory_bytes", "flops_per_step",
                   "compile_seconds"):
      assert row[column] not in ("", None), column
  markdown = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert "| mlp | 2 |" in markdown and "| glu | 2 |" in markdown and " ± " in markdown
  for png in ("eval_curves.png", "pareto.png"):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000
  # GLU has 1.5x the FFN parameters: the fairness check must say so.
  assert "Warning:** fairness" in markdown
  capsys.readouterr()
  studies.run_study(study, workdir)  # every cell finished: all skipped
  assert capsys.readouterr().out.count("finished, skipped") == 4


def test_parameter_counts_within_tolerance_pass_the_fairness_check(tmp_path, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  study = tiny_study(tmp_path, {"model.position.name": ["sinusoidal", "rope"]})
  study.attention_bench = attention_bench.get_config("study")  # and the speed side: both cells'
  study.attention_bench.lengths = (128,)  # attention is dense
  studies.run_study(study, str(tmp_path / "study"))
  markdown = open(tmp_path / "study" / "results.md", encoding="utf-8").read()
  assert "Fairness: parameter counts within 10%" in markdown
  assert "Attention layer at 128 tokens" in markdown
  assert "| sinusoidal, rope | dense | 1.00x | 1.00x |" in markdown


def test_unknown_grid_field_is_refused_before_running(tmp_path, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  study = tiny_study(tmp_path, {"train.num_stepz": [1]})
  with pytest.raises(ConfigError, match="num_stepz"):
    studies.run_study(study, str(tmp_path / "study"))
  assert not os.path.exists(tmp_path / "study" / "cells")


def test_quickstart_study_cells_are_valid_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  study = quickstart.get_config()
  grid = {k: list(v) for k, v in study.grid.items()}
  models = {}
  for cell in studies.cells(grid):
    config = studies.cell_config(study, cell)
    model = ModelConfig.from_dict({**config.model.to_dict(), "vocab_size": 20, "max_length": 64,
                                   "head": {"name": "classification", "num_classes": 10}})
    inputs = {"tokens": jnp.ones((2, 64), jnp.int32)}
    out, _ = jax.eval_shape(lambda m=model, x=inputs: Model(m).init_with_output(
        jax.random.PRNGKey(0), x)[0])
    assert out.shape == (2, 10)
    models[cell["variant"]] = model
  kinds = {name: (m.spec("attention")["name"], m.spec("ffn")["name"], m.spec("connection")["name"])
           for name, m in models.items()}
  assert kinds["dense"] == ("dense", "mlp", "residual")
  assert {kinds["bigbird"][0], kinds["performer"][0]} == {"bigbird", "performer"}
  assert kinds["moe"][1] == "moe" and kinds["denseformer"][2] == "denseformer"
  study.grid = ml_collections.ConfigDict({"variant": ["dense", "nope"]})
  with pytest.raises(ConfigError, match="variant='nope' is not in study.variants"):
    studies.run_study(study, str(tmp_path / "study"))
  assert not (tmp_path / "study").exists()  # nothing is created before the cells validate


def test_placeholders_and_variant_base_chain_cells(tmp_path, monkeypatch):
  """A variant may swap the base config and start from an earlier cell ("{workdir}",
  "{seed}"); the chained cell gets the earlier cell's parameters (init_from)."""
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  study = tiny_study(tmp_path, {"variant": ["first", "second"], "seed": [3]})
  study.variants = ml_collections.ConfigDict({
      "first": {"base": "configs/listops.py:tiny"},
      "second": {"init_from.workdir": "{workdir}/cells/seed={seed},variant=first",
                 "train.num_steps": 2, "train.eval_every": 2},
  }, allow_dotted_keys=True)
  cells = studies.cells({k: list(v) for k, v in study.grid.items()})
  second = studies.cell_config(study, cells[1], "/study")
  assert second.init_from.workdir == "/study/cells/seed=3,variant=first"
  assert studies.cell_config(study, cells[0], "/study").model.num_layers == 1  # the override
  rows = studies.run_study(study, str(tmp_path / "study"))
  assert [r["steps"] for r in rows] == [4, 2]
  assert rows[1]["train_flops"] == rows[1]["flops_per_step"] * 2
  study.variants.second["init_from.workdir"] = "{workdir}/{nope}"
  with pytest.raises(ConfigError, match="unknown placeholder 'nope'"):
    studies.cell_config(study, cells[1], "/study")
