"""Tests for experiments/data/tfds_text.py. Nothing here downloads or needs TensorFlow.

Two kinds of data:
  * `tfds.testing.mock_data` for real registered datasets (imdb_reviews, glue/sst2): it mocks
    `tfds.data_source` with random examples, so it checks names, keys and shapes.
  * a tiny builder defined here, prepared as ArrayRecord into a temp dir: the real read path
    (ArrayRecord files, bytes-valued Text features) and the "not prepared" / "TFRecord only"
    errors, which the mock bypasses.
"""

import json

import numpy as np
import pytest

# A stack without the data pipelines' packages (the device check's) skips this module.
tfds = pytest.importorskip("tensorflow_datasets")

from encoders.errors import ConfigError  # noqa: E402
from experiments.data.tfds_text import load_tfds_classification, num_classes  # noqa: E402
from experiments.data.tokenizers import ByteTokenizer  # noqa: E402

TOK = ByteTokenizer()
TINY_TEXTS = ["héllo wörld", "a", "", "the quick brown fox jumps over the lazy dog",
              "日本語 ✓"]


def _check_rows(out, texts, max_length):
  """CLS, then the truncated tokens, then PAD to max_length."""
  for row, text in zip(out["inputs"], texts, strict=True):
    tokens = TOK.encode(text)[: max_length - 1]
    assert row[0] == TOK.CLS_ID
    np.testing.assert_array_equal(row[1 : 1 + len(tokens)], tokens)
    assert (row[1 + len(tokens) :] == TOK.PAD_ID).all()


# ----------------------------------------------------------------------------
# Mocked registered datasets
# ----------------------------------------------------------------------------
def test_imdb_reviews_mocked():
  with tfds.testing.mock_data(num_examples=6):
    out = load_tfds_classification("imdb_reviews", split="train", max_length=12)
    texts = [ex["text"] for ex in tfds.data_source("imdb_reviews", split="train")]
    assert num_classes("imdb_reviews") == 2
    assert load_tfds_classification("imdb_reviews", split="test", max_length=12,
                                    max_examples=4)["inputs"].shape == (4, 12)
  assert out["inputs"].shape == (6, 12) and out["inputs"].dtype == np.int32
  assert out["labels"].shape == (6,) and out["labels"].dtype == np.int32
  assert set(out["labels"].tolist()) <= {0, 1}
  _check_rows(out, texts, 12)


def test_glue_builders_are_registered():
  with tfds.testing.mock_data(num_examples=3):
    out = load_tfds_classification("glue/sst2", split="validation", text_key="sentence",
                                    max_length=8)
    assert num_classes("glue/sst2") == 2
  assert out["inputs"].shape == (3, 8)


# ----------------------------------------------------------------------------
# A real ArrayRecord dataset prepared locally
# ----------------------------------------------------------------------------
class EncodersTinyTextClassification(tfds.core.GeneratorBasedBuilder):
  """Five labelled sentences; "sentence" is a Text feature, stored as bytes."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(num_classes=3),
        "score": tfds.features.Scalar(np.float32),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, text in enumerate(TINY_TEXTS):
      yield i, {"sentence": text, "label": i % 3, "score": float(i)}


NAME = "encoders_tiny_text_classification"


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  EncodersTinyTextClassification(data_dir=str(data_dir),
                                 file_format="array_record").download_and_prepare()
  return str(data_dir)


def _stored_order(data_dir):
  """(text, label) in the order tfds stored them (its writer shuffles by key)."""
  source = tfds.data_source(NAME, split="train", data_dir=data_dir, download=False)
  return [(ex["sentence"].decode(), int(ex["label"])) for ex in source]


def test_tiny_array_record(tiny_data_dir):
  out = load_tfds_classification(NAME, split="train", text_key="sentence",
                                 max_length=10, data_dir=tiny_data_dir)
  stored = _stored_order(tiny_data_dir)
  assert sorted(t for t, _ in stored) == sorted(TINY_TEXTS)
  assert out["inputs"].shape == (5, 10)
  _check_rows(out, [t for t, _ in stored], 10)  # includes truncation of the long sentence
  np.testing.assert_array_equal(out["labels"], [label for _, label in stored])
  assert num_classes(NAME, data_dir=tiny_data_dir) == 3
  few = load_tfds_classification(NAME, split="train[:40%]", text_key="sentence",
                                 max_length=10, data_dir=tiny_data_dir)
  np.testing.assert_array_equal(few["inputs"], out["inputs"][:2])


def test_tiny_feature_errors(tiny_data_dir):
  with pytest.raises(ValueError, match=r"data.tfds.text_key='text' is not a feature.*sentence"):
    load_tfds_classification(NAME, split="train", max_length=10, data_dir=tiny_data_dir)
  with pytest.raises(ValueError, match="not a ClassLabel"):
    num_classes(NAME, label_key="score", data_dir=tiny_data_dir)
  with pytest.raises(ValueError, match="data.tfds.max_length=1"):
    load_tfds_classification(NAME, split="train", text_key="sentence", max_length=1,
                             data_dir=tiny_data_dir)


def test_not_prepared_error_says_how_to_prepare(tmp_path):
  with pytest.raises(ValueError, match=f"not prepared.*tfds build {NAME} "
                     "--file_format=array_record") as e:
    load_tfds_classification(NAME, split="train", text_key="sentence", max_length=8,
                             data_dir=str(tmp_path))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="no TFDS dataset named 'no_such_dataset_xyz'"):
    load_tfds_classification("no_such_dataset_xyz", split="train", max_length=8,
                             data_dir=str(tmp_path))


def test_tfrecord_only_error_points_to_tf_extra(tmp_path):
  # Prepare as ArrayRecord, then relabel the metadata as TFRecord: tfds then sees a dataset
  # with no random-access files, as it would for one prepared by `tfds.load` defaults.
  EncodersTinyTextClassification(data_dir=str(tmp_path),
                                 file_format="array_record").download_and_prepare()
  info_path = tmp_path / NAME / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(ConfigError, match=r"TFRecord only.*pip install -e '\.\[tf\]'") as e:
    load_tfds_classification(NAME, split="train", text_key="sentence", max_length=8,
                             data_dir=str(tmp_path))
  assert "\n" not in str(e.value)
