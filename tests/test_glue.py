"""GLUE (experiments/data/glue.py, experiments/tasks/glue.py, glue_metrics.py): sentence and
pair encoding on TFDS mock data, the missing-data error, the official metrics against
hand-computed values (and scipy / scikit-learn), the GLUE-layout table, and the study end to
end on mock data (slow)."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from encoders.errors import ConfigError  # noqa: E402
from experiments.data import glue  # noqa: E402
from experiments.data.tokenizers import ByteTokenizer  # noqa: E402
from experiments.tasks import glue_metrics as gm  # noqa: E402

TOK = ByteTokenizer()


def test_pairs_get_sep_between_and_type_ids_one_after_it():
  a, b = np.arange(10, 16), np.arange(20, 23)
  tokens, types = glue.encode_pair(a, b, 9, TOK)  # budget 6: longer text loses tokens first
  np.testing.assert_array_equal(tokens, [TOK.CLS_ID, 10, 11, 12, TOK.SEP_ID, 20, 21, 22,
                                         TOK.SEP_ID])
  np.testing.assert_array_equal(types, [0, 0, 0, 0, 0, 1, 1, 1, 1])
  tokens, types = glue.encode_pair(a, None, 5, TOK)
  np.testing.assert_array_equal(tokens, [TOK.CLS_ID, 10, 11, 12, TOK.SEP_ID])
  assert not types.any()


@pytest.mark.parametrize("task, pair, dtype", [("sst2", False, np.int32),
                                               ("rte", True, np.int32),
                                               ("stsb", True, np.float32)])
def test_mocked_splits_single_pair_and_regression(task, pair, dtype):
  with tfds.testing.mock_data(num_examples=4):
    out = glue.load_glue(task, "train", tokenizer=TOK, max_length=24, data_dir=None)
  assert out["inputs"].shape == out["type_ids"].shape == (4, 24)
  assert out["labels"].dtype == dtype and (out["inputs"][:, 0] == TOK.CLS_ID).all()
  seps = (out["inputs"] == TOK.SEP_ID).sum(1)
  assert (seps >= (2 if pair else 1)).all()
  assert out["type_ids"].any() == pair


def test_missing_data_is_one_line_with_the_build_command(tmp_path):
  with pytest.raises(ConfigError) as error:
    glue.load_glue("rte", "train", tokenizer=TOK, max_length=16, data_dir=str(tmp_path))
  message = str(error.value)
  assert "\n" not in message
  assert f"tfds build glue/rte --data_dir {tmp_path} --file_format=array_record" in message
  with pytest.raises(ConfigError, match="data.glue.task='ax'; allowed: cola, sst2"):
    glue.task("ax")


def test_metrics_match_hand_computed_values():
  pred, label = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 1, 1, 0])
  # tp 2, fp 1, fn 1, tn 2
  assert gm.accuracy(pred, label) == pytest.approx(4 / 6)
  assert gm.f1(pred, label) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
  assert gm.matthews(pred, label) == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
  assert gm.matthews(np.ones(4), np.array([1, 0, 1, 0])) == 0.0  # a constant predictor
  np.testing.assert_array_equal(gm.ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
  x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 10.0])
  assert gm.spearman(x, y) == pytest.approx(1 - 6 * 2 / (4 * 15))  # one swapped pair
  assert gm.pearson(x, 2 * x + 1) == pytest.approx(1.0)
  mnli = gm.task_metrics("mnli", np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]),
                         np.array([0, 0, 1, 1]))
  assert mnli == {"accuracy_matched": 100.0, "accuracy_mismatched": 50.0, "score": 75.0}


def test_metrics_agree_with_scipy_and_scikit_learn():
  stats = pytest.importorskip("scipy.stats")
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  pred, label = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
  assert gm.matthews(pred, label) == pytest.approx(
      sklearn_metrics.matthews_corrcoef(label, pred))
  assert gm.f1(pred, label) == pytest.approx(sklearn_metrics.f1_score(label, pred))
  x, y = rng.normal(size=40), np.round(rng.normal(size=40), 1)  # ties in y
  assert gm.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
  assert gm.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_table_has_glue_layout_and_averages_two_metric_tasks_first():
  def row(task, seed, **metrics):
    score = sum(metrics.values()) / len(metrics)
    return {"variant": "scratch", "data.glue.task": task, "seed": seed, "final_score": score,
            **{f"final_{k}": v for k, v in metrics.items()}}

  rows = [row("mrpc", 0, f1=80.0, accuracy=70.0), row("mrpc", 1, f1=90.0, accuracy=80.0),
          row("cola", 0, matthews=30.0), row("stsb", 0, pearson=50.0, spearman=40.0)]
  table = gm.glue_table(rows, ["variant"]).splitlines()
  assert table[0] == "| variant | CoLA | MRPC | STS-B | GLUE |"
  # MRPC: F1 85, acc 75 -> 80; GLUE = (30 + 80 + 45) / 3
  assert table[2] == "| scratch | 30.0 | 85.0/75.0 | 50.0/40.0 | 51.7 |"


@pytest.mark.slow
def test_glue_study_runs_end_to_end_on_mock_data(tmp_path):
  from configs.baselines import glue as study_config  # pylint: disable=import-outside-toplevel
  from experiments import study as studies  # pylint: disable=import-outside-toplevel
  study = study_config.get_config("smoke")
  with tfds.testing.mock_data(num_examples=16):
    rows = studies.run_study(study, str(tmp_path))
  assert {r["data.glue.task"] for r in rows} == {"sst2", "mrpc", "stsb"}
  assert all(r.get("final_score") is not None for r in rows)
  assert {"final_f1", "final_accuracy"} <= set(next(r for r in rows
                                                    if r["data.glue.task"] == "mrpc"))
  assert {"final_pearson", "final_spearman"} <= set(rows[-1])
  results = (tmp_path / "results.md").read_text()
  assert "| variant | SST-2 | MRPC | STS-B | GLUE |" in results


def test_full_study_covers_the_nine_tasks_with_three_seeds(tmp_path):
  from configs.baselines import glue as study_config  # pylint: disable=import-outside-toplevel
  from experiments import study as studies  # pylint: disable=import-outside-toplevel
  study = study_config.get_config("full")
  cells = studies.cells({k: list(v) for k, v in study.grid.items()})
  assert {c["data.glue.task"] for c in cells} == set(glue.TASKS)
  assert {c["seed"] for c in cells} == {0, 1, 2}
  config = studies.cell_config(study, cells[0], str(tmp_path))
  assert config.task == "glue" and config.data.glue.task == "cola"
