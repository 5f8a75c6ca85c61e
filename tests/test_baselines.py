"""Paper baselines (configs/baselines/): every study's full-size cells are valid configs, and
each study runs end to end in its `smoke` size (the full runs are in docs/baselines.md)."""

import importlib
import pathlib

import pytest

from experiments import bench
from experiments import study as studies

STUDIES = ("lra_listops", "denseformer", "router_order", "sparse_upcycling",
           "pretraining_objectives", "packing", "pooling", "ssm_listops", "lra_suite",
           "lra_pathfinder_cpu", "lra_self_pretraining", "hybrid_attention")


def study_config(name, preset):
  return importlib.import_module(f"configs.baselines.{name}").get_config(preset)


def test_every_baseline_config_is_listed():
  found = {p.stem for p in pathlib.Path("configs/baselines").glob("*.py")} - {"__init__"}
  assert found == set(STUDIES) | {"lra_efficiency", "glue"}  # glue: tests/test_glue.py


@pytest.mark.parametrize("name", STUDIES)
def test_full_study_cells_are_valid(name, tmp_path):
  study = study_config(name, "full")
  grid = {k: list(v) for k, v in study.grid.items()}
  all_cells = studies.cells(grid)
  assert len({c["seed"] for c in all_cells}) >= 3  # mean ± std over >= 3 seeds
  for cell in all_cells:
    config = studies.cell_config(study, cell, str(tmp_path))
    source = config.init_from.workdir
    if source:  # a later cell starts from an earlier cell of the same study and seed
      earlier = [studies.cell_name(c) for c in all_cells[:all_cells.index(cell)]]
      assert pathlib.Path(source).name in earlier
      assert f"seed={cell['seed']}" in source


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_smoke_study_runs(name, tmp_path):
  study = study_config(name, "smoke")
  rows = studies.run_study(study, str(tmp_path))
  assert len(rows) == len(studies.cells({k: list(v) for k, v in study.grid.items()}))
  assert (tmp_path / "results.md").exists()
  scored = [r for r in rows if r.get(f"final_{study.primary_metric}") is not None]
  assert scored, "no cell reports the primary metric"


@pytest.mark.slow
def test_lra_efficiency_smoke(tmp_path):
  config = importlib.import_module("configs.baselines.lra_efficiency").get_config("smoke")
  bench.run(config, str(tmp_path))
  text = (tmp_path / "results.md").read_text()
  assert "performer" in text and "local" in text
