"""Text classification from any TFDS dataset, read without TensorFlow.

Uses `tfds.data_source` (random access over ArrayRecord files), so only the prepared files are
needed and TensorFlow is not. This code never downloads: a dataset must be prepared once, e.g.

    tfds build imdb_reviews --file_format=array_record [--data_dir=DIR]

(preparing some datasets needs TensorFlow: `pip install -e '.[tf]'`). Datasets already
prepared as TFRecord only cannot be read this way; re-prepare them as ArrayRecord.
"""

from __future__ import annotations

import numpy as np

from encoders.errors import ConfigError
from experiments.data.tokenizers import ByteTokenizer


def tfds_module():
  """tensorflow_datasets with its text datasets registered (glue, yelp_polarity_reviews, ...;
  no TensorFlow), imported when a TFDS dataset is first used: machines that read no TFDS data
  need not have it."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets.text  # noqa: F401  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ConfigError(f"data.tfds: reading TFDS datasets needs tensorflow-datasets ({error}); "
                      "pip install -e .") from None
  return tfds


def _prepare_hint(name: str) -> str:
  """How to prepare `name` as ArrayRecord, for error messages."""
  return (f"prepare it once with `tfds build {name} --file_format=array_record "
          f"[--data_dir=DIR]` (or tfds.builder({name!r}, file_format='array_record')"
          ".download_and_prepare())")


def data_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` without downloading, with one-line errors for the usual failures."""
  tfds = tfds_module()
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.DatasetNotFoundError:
    raise ConfigError(f"data.tfds.name: no TFDS dataset named {name!r} "
                     "(see tfds.list_builders())") from None
  except (NotImplementedError, KeyError) as e:
    # tfds raises one of these both for a dataset that was never prepared and for one
    # prepared only in a format without random access (TFRecord).
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise ConfigError(f"data.tfds.name: TFDS dataset {name!r} is not prepared at "
                       f"'{builder.data_dir}'; {_prepare_hint(name)}") from None
    if isinstance(e, NotImplementedError):
      raise ConfigError(
          f"data.tfds.name: TFDS dataset {name!r} at '{builder.data_dir}' has no ArrayRecord "
          f"files (TFRecord only), which need TensorFlow to read; either "
          f"{_prepare_hint(name)} in a fresh data_dir, or `pip install -e '.[tf]'` and convert "
          f"it with `tfds convert_format --dataset_dir={builder.data_dir} "
          f"--out_file_format=array_record`") from None
    raise


def to_str(value) -> str:
  """A TFDS Text feature as str: the ArrayRecord path yields bytes, mocks yield str."""
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def load_tfds_classification(
    name: str,
    *,
    split: str,
    text_key: str = "text",
    label_key: str = "label",
    max_length: int,
    data_dir: str | None = None,
    tokenizer=ByteTokenizer(),
    max_examples: int | None = None,
) -> dict[str, np.ndarray]:
  """Loads a TFDS text classification split as fixed-length token arrays.

  Each example becomes `[CLS] + tokens[: max_length - 1]`, right-padded with PAD. Examples
  keep the dataset's stored order (shuffling is the pipeline's job). Reading uses only the
  Sequence protocol (`len`, `source[i]`; about 20k 1-KB examples per second), so any
  random-access source works, including `tfds.testing.mock_data`'s.

  Args:
    name: TFDS name, optionally with config/version, e.g. "imdb_reviews" or "glue/sst2".
    split: TFDS split spec, e.g. "train", "test", "train[:10%]".
    text_key: the text feature (Text / bytes / str).
    label_key: the integer label feature (usually a ClassLabel).
    max_length: output length, including the leading CLS; at least 2.
    data_dir: TFDS data directory; None = TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    tokenizer: object with `encode(str) -> int array`, `CLS_ID` and `PAD_ID`.
    max_examples: read only the first `max_examples` examples of the split.

  Returns:
    {"inputs": int32 [N, max_length], "labels": int32 [N]}.
  """
  if max_length < 2:
    raise ConfigError(f"data.tfds.max_length={max_length}; must be >= 2 (CLS + one token)")
  if max_examples is not None and max_examples <= 0:
    raise ConfigError(f"data.tfds.max_train or max_eval={max_examples}; must be positive or None")
  source = data_source(name, split, data_dir)
  num = len(source) if max_examples is None else min(len(source), max_examples)
  if num == 0:
    raise ConfigError(f"data.tfds split: split {split!r} of {name!r} is empty")

  inputs = np.full((num, max_length), tokenizer.PAD_ID, np.int32)
  inputs[:, 0] = tokenizer.CLS_ID
  labels = np.empty((num,), np.int32)
  for row in range(num):
    example = source[row]
    for key, field in ((text_key, "text_key"), (label_key, "label_key")):
      if key not in example:
        raise ConfigError(f"data.tfds.{field}={key!r} is not a feature of {name!r}; "
                         f"features: {sorted(example)}")
    tokens = tokenizer.encode(to_str(example[text_key]))[: max_length - 1]
    inputs[row, 1 : 1 + len(tokens)] = tokens
    labels[row] = int(np.asarray(example[label_key]))
  if labels.min() < 0:
    raise ConfigError(f"data.tfds split: split {split!r} of {name!r} has negative labels "
                     "(unlabelled, as in GLUE test splits); use a labelled split")
  return {"inputs": inputs, "labels": labels}


def num_classes(name: str, label_key: str = "label", data_dir: str | None = None) -> int:
  """Number of classes of a ClassLabel feature, from the builder's metadata (reads no data)."""
  tfds = tfds_module()
  features = tfds.builder(name, data_dir=data_dir).info.features
  if label_key not in features:
    raise ConfigError(f"data.tfds.label_key={label_key!r} is not a feature of {name!r}; "
                     f"features: {sorted(features.keys())}")
  feature = features[label_key]
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ConfigError(f"data.tfds.label_key={label_key!r} of {name!r} is a "
                     f"{type(feature).__name__}, not a ClassLabel; set the number of classes "
                     "in the config")
  return feature.num_classes
