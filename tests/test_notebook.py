"""notebooks/explore_results.ipynb executes against a tiny study written by experiments/study.py."""

from __future__ import annotations

import os

import pytest

from tests.test_compare import tiny_study

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def test_notebook_executes_on_a_study(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  from experiments import study as studies  # pylint: disable=import-outside-toplevel
  study = tiny_study(tmp_path, {"model.ffn.name": ["mlp"], "seed": [0]})
  study.overrides.update({"train.num_steps": 2, "train.eval_every": 2,
                          "train.checkpoint_every": 2, "model.dim": 16, "model.mlp_dim": 32})
  workdir = str(tmp_path / "study")
  studies.run_study(study, workdir)
  monkeypatch.setenv("ENCODERS_STUDY", workdir)
  monkeypatch.setenv("ENCODERS_PATTERN_LENGTH", "256")
  with open(os.path.join(REPO, "notebooks", "explore_results.ipynb"), encoding="utf-8") as f:
    notebook = nbformat.read(f, as_version=4)
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert "1 cells; columns:" in text and "1 finished cells" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # eval curves + losses, Pareto, attention patterns
  markdown = [o for o in outputs if "text/markdown" in o.get("data", {})]
  assert markdown and "| mlp |" in markdown[0]["data"]["text/markdown"]
