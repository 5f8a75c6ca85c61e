"""The LRA tasks (configs/lra/): LRA's ListOps and AAN files from tiny TSV fixtures, CIFAR-10
pixels through TFDS mocks, the two-tower head, LRA's rsqrt schedule, best-checkpoint selection,
the missing-data errors, and every smoke preset end to end (slow)."""

import importlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from encoders.config import ModelConfig
from encoders.errors import ConfigError
from encoders.heads.classification import LRAClassificationHead
from encoders.heads.pair import PairClassificationHead, pair_features
from experiments import optim
from experiments.data import aan, listops, tfds_image
from experiments.tasks.classify import ClassifyTask
from experiments.tasks.match import split_pairs
from experiments.train import train_and_evaluate

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def lra_config(task, preset="smoke"):
  return importlib.import_module(f"configs.lra.{task}").get_config(preset)


# ----------------------------------------------------------------------------
# LRA's released files, as tiny fixtures
# ----------------------------------------------------------------------------
def write_listops_tsvs(directory):
  rows = {"train": [("( ( [MAX 2 9 ) 4 ] )", 9), ("( [SM 3 4 ] )", 7)],
          "val": [("( [MIN 5 ( [MED 1 2 3 ] ) ] )", 2)], "test": [("7", 7)]}
  for name, examples in rows.items():
    lines = ["Source\tTarget"] + [f"{s}\t{t}" for s, t in examples]
    (directory / f"basic_{name}.tsv").write_text("\n".join(lines) + "\n")


def test_lra_listops_tsv(tmp_path):
  write_listops_tsvs(tmp_path)
  train = listops.load_lra_listops(str(tmp_path), "train", max_length=4)
  assert train["inputs"].shape == (2, 5)
  assert listops.decode(train["inputs"][0]) == ["<cls>", "[MAX", "2", "9", "4"]  # truncated
  assert listops.decode(train["inputs"][1]) == ["<cls>", "[SM", "3", "4", "]"]
  np.testing.assert_array_equal(train["labels"], [9, 7])
  val = listops.load_lra_listops(str(tmp_path), "validation", max_length=10)
  assert listops.decode(val["inputs"][0])[:8] == ["<cls>", "[MIN", "5", "[MED", "1", "2", "3",
                                                  "]"]
  with pytest.raises(ConfigError, match=r"lra_dir: no file .*basic_train.tsv.*lra_release"):
    listops.load_lra_listops(str(tmp_path / "none"), "train", max_length=4)


def write_aan_tsvs(directory, num=4):
  for split in ("train", "eval", "test"):
    lines = [f"{float(i % 2)}\tid{i}\tid{i + 1}\tpaper {i} text\tcited é {i}" for i in range(num)]
    (directory / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")


def test_aan_tsv(tmp_path):
  write_aan_tsvs(tmp_path)
  data = aan.load_aan(str(tmp_path), "train", max_length=8, max_examples=3)
  assert data["inputs"].shape == (3, 16)
  np.testing.assert_array_equal(data["labels"], [0, 1, 0])
  first = data["inputs"][0]
  def text(ids):
    return bytes((ids - 4).astype(np.uint8))
  assert first[0] == 1 and text(first[1:8]) == b"paper 0"  # CLS + bytes, truncated
  assert first[8] == 1 and text(first[9:16]) == "cited é".encode()[:7]
  with pytest.raises(ConfigError, match=r"data.aan.dir: .*lra_release.*tsv_data") as error:
    aan.load_aan("", "train", max_length=8)
  assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------
# The two-tower head
# ----------------------------------------------------------------------------
def test_pair_head_shapes_and_symmetry():
  config = ModelConfig.from_dict(dict(vocab_size=20, max_length=8, dim=8, num_layers=1,
                                      num_heads=2, mlp_dim=16))
  head = PairClassificationHead(config, num_classes=3, pooling="mean")
  hidden = jax.random.normal(jax.random.PRNGKey(0), (6, 5, 8))  # 3 pairs
  mask = jnp.ones((6, 5), bool).at[1, 3:].set(False)
  params = head.init(jax.random.PRNGKey(1), hidden, inputs={"mask": mask})
  logits = head.apply(params, hidden, inputs={"mask": mask})
  assert logits.shape == (3, 3)
  # Swapping the towers swaps u and v: the features are the same up to [v, u, u*v, v-u].
  swapped = jnp.concatenate([hidden[3:], hidden[:3]])
  swapped_mask = jnp.concatenate([mask[3:], mask[:3]])
  u, v = hidden[:3].mean(1), hidden[3:].mean(1)
  a, b = pair_features(u, v, "nli"), pair_features(v, u, "nli")
  d = u.shape[-1]
  np.testing.assert_allclose(b[:, :d], a[:, d:2 * d])
  np.testing.assert_allclose(b[:, 2 * d:3 * d], a[:, 2 * d:3 * d])
  np.testing.assert_allclose(b[:, 3 * d:], -a[:, 3 * d:])
  # The order of the documents matters to the head (u - v), not to the towers.
  assert not np.allclose(logits, head.apply(params, swapped, inputs={"mask": swapped_mask}))


def test_lra_classifier_head_is_lras():
  """LRA's classifier_head: mean over every position (padding too) -> Dense(mlp_dim) -> ReLU ->
  Dense(classes), no dropout."""
  config = ModelConfig.from_dict(dict(vocab_size=20, max_length=8, dim=8, num_layers=1,
                                      num_heads=2, mlp_dim=16, dropout_rate=0.5))
  head = LRAClassificationHead(config, num_classes=3, pooling="mean")
  hidden = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 8))
  mask = jnp.ones((4, 5), bool).at[1, 2:].set(False)
  params = head.init(jax.random.PRNGKey(1), hidden, inputs={"mask": mask})["params"]
  out = head.apply({"params": params}, hidden, inputs={"mask": mask}, deterministic=False,
                   rngs={"dropout": jax.random.PRNGKey(2)})
  params = nn.meta.unbox(params)
  x = np.asarray(hidden).mean(1)
  x = np.maximum(x @ np.asarray(params["mlp"]["kernel"]) + np.asarray(params["mlp"]["bias"]), 0)
  x = x @ np.asarray(params["logits"]["kernel"]) + np.asarray(params["logits"]["bias"])
  np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


def test_pair_head_without_dropout_is_deterministic():
  config = ModelConfig.from_dict(dict(vocab_size=20, max_length=8, dim=8, num_layers=1,
                                      num_heads=2, mlp_dim=16, dropout_rate=0.5))
  hidden = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 8))
  inputs = {"mask": jnp.ones((4, 5), bool)}
  for dropout, same in ((False, True), (True, False)):
    head = PairClassificationHead(config, num_classes=2, interaction="concat", dropout=dropout)
    params = head.init(jax.random.PRNGKey(1), hidden, inputs=inputs)
    a, b = (head.apply(params, hidden, inputs=inputs, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(k)}) for k in (2, 3))
    assert np.allclose(a, b) == same


def test_aan_without_cls_and_pixel_padding(tmp_path):
  write_aan_tsvs(tmp_path)
  data = aan.load_aan(str(tmp_path), "train", max_length=8, cls=False)
  assert bytes((data["inputs"][0, :7] - 4).astype(np.uint8)) == b"paper 0"  # no CLS
  task = ClassifyTask.__new__(ClassifyTask)
  task.token_offset, task.zero_is_padding = 4, True
  batch = task.tokens({"inputs": np.array([[0, 1, 255]], np.uint8)})
  np.testing.assert_array_equal(batch["inputs"], [[0, 5, 259]])  # pixel 0 -> PAD (0)
  task.zero_is_padding = False
  np.testing.assert_array_equal(task.tokens({"inputs": np.array([[0]], np.uint8)})["inputs"],
                                [[4]])


def test_split_pairs_stacks_towers():
  rows = jnp.arange(2 * 6).reshape(2, 6)
  np.testing.assert_array_equal(split_pairs(rows), [[0, 1, 2], [6, 7, 8], [3, 4, 5],
                                                    [9, 10, 11]])


# ----------------------------------------------------------------------------
# Schedule, pixels
# ----------------------------------------------------------------------------
def test_rsqrt_schedule_is_lras():
  t = ml_collections.ConfigDict(dict(schedule="rsqrt", learning_rate=0.05, warmup_steps=1000,
                                     num_steps=500, end_lr_fraction=0.0))
  schedule = optim.learning_rate_schedule(t)  # warmup may exceed num_steps, as in LRA
  for step in (0, 1, 500, 1000, 4000):
    expected = 0.05 * min(1, step / 1000) / np.sqrt(max(step, 1000))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_grayscale_is_tfs():
  """tf.image.rgb_to_grayscale on uint8: trunc(255.5 * sum(w * v / 255)); 0.587 * 255.5 =
  149.98 -> 149 (rounding would give 150)."""
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
  np.testing.assert_array_equal(tfds_image.grayscale(rgb), [[76, 149, 29, 18]])


def test_cifar10_mocked():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    out = tfds_image.load_tfds_images("cifar10", split="train")
  assert out["inputs"].shape == (5, 1024) and out["inputs"].dtype == np.uint8
  assert set(out["labels"].tolist()) <= set(range(10))


# ----------------------------------------------------------------------------
# Configs, errors, best-checkpoint evaluation
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_full_configs_have_lras_settings(task):
  """LRA's <task>/transformer_base.py over its base config (layers, heads, width, qkv_dim,
  MLP, dropout, batch, steps, positions)."""
  config = lra_config(task, "full")
  expected = {
      "listops": (4, 8, 512, 512, 1024, 0.1, 32, 5_000, "sinusoidal"),
      "text": (4, 4, 256, 256, 1024, 0.1, 32, 20_000, "sinusoidal"),
      "retrieval": (4, 4, 128, 128, 512, 0.1, 32, 5_000, "sinusoidal"),
      "image": (1, 8, 128, 64, 128, 0.3, 256, 35_000, "learned"),
      "pathfinder": (4, 4, 32, 16, 32, 0.2, 512, 62_400, "sinusoidal"),
      "pathx": (1, 2, 32, 16, 32, 0.1, 64, 500_000, "learned")}
  m, t = config.model, config.train
  assert (m.num_layers, m.num_heads, m.dim, m.head_dim * m.num_heads, m.mlp_dim,
          m.dropout_rate, t.batch_size, t.num_steps, m.position["name"]) == expected[task]
  assert config.eval.select_best == "accuracy"
  head = "pair_classification" if task == "retrieval" else "lra_classification"
  assert config.model.head["name"] == head
  assert config.data.pixel_zero_is_padding == (task in ("image", "pathfinder", "pathx"))
  assert config.train.grad_clip_norm == (1.0 if task == "pathx" else 0.0)


def test_lra_presets():
  local = lra_config("pathfinder", "local")
  assert (local.model.num_layers, local.model.num_heads, local.model.dim) == (2, 4, 64)
  assert dict(local.model.attention) == dict(name="local", block_size=64, window=1)
  performer = lra_config("pathfinder", "performer")
  assert (performer.model.num_layers, performer.model.num_heads) == (4, 8)
  bigbird = lra_config("pathfinder", "bigbird")
  assert (bigbird.model.num_layers, bigbird.model.num_heads, bigbird.model.dim) == (4, 2, 64)
  paper = lra_config("listops", "paper")
  assert (paper.model.num_layers, paper.model.mlp_dim) == (6, 2048)
  assert lra_config("listops", "bigbird").model.num_layers == 4  # LRA changes only attention
  retrieval = lra_config("retrieval", "full")
  assert (retrieval.data.aan.max_length, retrieval.data.aan.cls) == (4_000, False)
  assert (retrieval.model.head["interaction"], retrieval.model.head["dropout"]) == (
      "concat", False)
  assert lra_config("text", "full").data.tfds.max_length == 4_001  # 4,000 bytes + CLS
  pathx = lra_config("pathx", "full")
  assert (pathx.train.warmup_steps, pathx.data.pathfinder.size) == (2_500, 128)
  with pytest.raises(ValueError, match="allowed: full, smoke, local"):
    lra_config("pathfinder", "huge")


@pytest.mark.parametrize("task", ["text", "retrieval", "image"])
def test_smoke_without_data_is_a_one_line_error(task, tmp_path):
  config = lra_config(task)
  with config.unlocked():
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.tfds.data_dir = str(tmp_path / "tfds")
    config.data.image.data_dir = str(tmp_path / "tfds")
  hint = {"text": "tfds build imdb_reviews", "retrieval": "lra_release",
          "image": "tfds build cifar10"}[task]
  with pytest.raises(ConfigError, match=hint) as error:
    train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(error.value)
  if task != "retrieval":  # (the smoke preset's data.aan.dir is empty)
    assert str(tmp_path / "tfds") in str(error.value)


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_select_best_tests_the_best_checkpoint(tmp_path):
  config = lra_config("listops")
  config.data.cache_dir = str(tmp_path / "cache")
  config.train.update(num_steps=4, eval_every=2, checkpoint_every=2)
  config.eval.max_batches = 0
  workdir = tmp_path / "run"
  train_and_evaluate(config, str(workdir))
  evals = [r for r in records(workdir) if r["split"] == "eval"]
  tests = [r for r in records(workdir) if r["split"] == "test"]
  best = max(evals, key=lambda r: r["accuracy"])  # the first of equal values is kept
  assert len(tests) == 1 and tests[0]["best_step"] == best["step"]
  assert tests[0]["best_eval_accuracy"] == best["accuracy"]
  assert [p.name for p in (workdir / "checkpoints_best").iterdir()] == [str(best["step"])]
  # A finished run that lost its test record writes it again, the same.
  kept = [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
          if '"test"' not in line and '"status"' not in line]
  (workdir / "metrics.jsonl").write_text("\n".join(kept) + "\n")
  train_and_evaluate(config, str(workdir))
  again = [r for r in records(workdir) if r["split"] == "test"]
  assert again == tests


# ----------------------------------------------------------------------------
# Smoke presets end to end
# ----------------------------------------------------------------------------
def run_smoke(task, tmp_path, **data):
  config = lra_config(task)
  config.data.cache_dir = str(tmp_path / "cache")
  for key, value in data.items():
    config.data[key].update(value)
  result = train_and_evaluate(config, str(tmp_path / "run"))
  assert result.finished and 0.0 <= result.metrics["accuracy"] <= 1.0
  assert any(r["split"] == "test" for r in records(tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["listops", "pathfinder", "pathx"])
def test_offline_smoke_presets(task, tmp_path):
  run_smoke(task, tmp_path)


@pytest.mark.slow
def test_retrieval_smoke_on_fixture(tmp_path):
  write_aan_tsvs(tmp_path, num=8)
  run_smoke("retrieval", tmp_path, aan={"dir": str(tmp_path)})


@pytest.mark.slow
@pytest.mark.parametrize("task", ["text", "image"])
def test_tfds_smoke_presets_mocked(task, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    run_smoke(task, tmp_path)


@pytest.mark.slow
def test_listops_smoke_on_lra_files(tmp_path):
  write_listops_tsvs(tmp_path)
  run_smoke("listops", tmp_path, listops={"lra_dir": str(tmp_path)})


def test_lra_table_layout():
  from experiments.study_report import pivot_table
  rows = [{"variant": v, "base": f"configs/lra/{t}.py", "seed": s, "test_accuracy": a + s / 100}
          for v, scores in (("dense", {"listops": 0.4, "text": 0.6}), ("local", {"listops": 0.2}))
          for t, a in scores.items() for s in (0, 1)]
  table = pivot_table(rows, rows_field="variant", columns_field="base", metric="test_accuracy")
  lines = table.splitlines()
  assert lines[0] == "| variant | listops | text | average |"
  assert lines[2].startswith("| dense | 0.405 ± 0.0071 | 0.605 ± 0.0071 | 0.505 |")
  assert lines[3] == "| local | 0.205 ± 0.0071 | – | – |"  # no average without every task
  lines = pivot_table(rows, rows_field="variant", columns_field="base", metric="test_accuracy",
                      also_average_without="text").splitlines()
  assert lines[0] == "| variant | listops | text | average | average without text |"
  assert lines[2].endswith("| 0.505 | 0.405 |")
  assert lines[3].endswith("| – | 0.205 |")  # the five-task average needs only those five
