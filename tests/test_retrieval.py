"""The stdlib retrieval benchmark: pair extraction, deterministic split, metrics."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from encoders.errors import ConfigError
from experiments.data import retrieval

SOURCE = textwrap.dedent('''
    import functools

    @functools.lru_cache
    def area(width, height):
        """Return the area of a width x height rectangle.

        Both sides must be non-negative.
        """
        if width < 0 or height < 0:
            raise ValueError("negative side")
        return width * height

    def short(x):
        """Return x."""
        y = x
        return y

    class Stack:
        def push(self, item):
            """Push an item on top of the stack (amortised O(1))."""
            self.items.append(item)
            self.size += 1
            return self

        def undocumented(self):
            return 1

    def stub():
        """Not implemented here; subclasses override this method."""
        pass
''')


def test_extract_pairs_strips_the_docstring_keeps_signature_and_decorators():
  pairs = dict(retrieval.extract_pairs(SOURCE))
  assert set(pairs) == {"Return the area of a width x height rectangle.\n\n"
                        "Both sides must be non-negative.",
                        "Push an item on top of the stack (amortised O(1))."}
  area = pairs["Return the area of a width x height rectangle.\n\nBoth sides must be "
               "non-negative."]
  assert area.startswith("@functools.lru_cache\ndef area(width, height):\n    if width")
  assert '"""' not in area and "non-negative" not in area
  push = pairs["Push an item on top of the stack (amortised O(1))."]
  assert push.startswith("def push(self, item):\n    self.items.append")  # dedented
  assert retrieval.extract_pairs("def broken(:\n") == []


def test_load_pairs_split_is_by_file_deterministic_and_deduplicated(tmp_path):
  names = [f"mod{i}.py" for i in range(12)]
  for name in names:
    (tmp_path / name).write_text(SOURCE.replace("rectangle", f"rectangle in {name}"))
  (tmp_path / "tests").mkdir()
  (tmp_path / "tests" / "test_x.py").write_text(SOURCE.replace("rectangle", "test"))
  splits = retrieval.load_pairs(str(tmp_path), eval_fraction=0.3)
  again = retrieval.load_pairs(str(tmp_path), eval_fraction=0.3)
  assert splits == again
  eval_files = [n for n in names if retrieval._in_eval(n, 0.3)]  # pylint: disable=protected-access
  assert 0 < len(eval_files) < len(names)
  queries = {s: [q for q, _ in pairs] for s, pairs in splits.items()}
  # Each file adds its own rectangle query; the shared `push` docstring appears only once.
  assert sum("rectangle in" in q for q in queries["eval"]) == len(eval_files)
  assert sum(q.startswith("Push") for qs in queries.values() for q in qs) == 1
  assert not any("test" in q for qs in queries.values() for q in qs)  # tests/ is skipped
  capped = retrieval.load_pairs(str(tmp_path), eval_fraction=0.3, max_train=2)
  assert capped["train"] == splits["train"][:2] and capped["eval"] == splits["eval"]
  with pytest.raises(ConfigError, match="eval_fraction"):
    retrieval.load_pairs(str(tmp_path), eval_fraction=1.0)


def test_metrics_on_a_toy_ranking():
  ranks = np.array([1, 3, 11, 150])
  metrics = retrieval.retrieval_metrics(ranks)
  assert metrics["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
  assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
  assert metrics["recall@100"] == pytest.approx(3 / 4)


def test_ranks_from_scores_count_ties_against_the_relevant_document():
  scores = np.array([[0.9, 0.1, 0.5],    # relevant 0: best -> rank 1
                     [0.7, 0.2, 0.7],    # relevant 1: two above -> rank 3
                     [0.4, 0.4, 0.4]])   # relevant 2: all tied -> rank 3 (pessimistic)
  np.testing.assert_array_equal(retrieval.relevant_ranks(scores, np.arange(3)), [1, 3, 3])
  perfect = np.eye(5)
  metrics = retrieval.evaluate_embeddings(perfect, perfect, chunk=2)
  assert metrics == {"mrr@10": 1.0, "ndcg@10": 1.0, "recall@100": 1.0}
