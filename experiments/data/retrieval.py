"""An offline code-retrieval benchmark from the Python standard library, and its metrics.

Pairs, built with `ast` from every Python's own sources (no download): the query is a
function's docstring (`inspect.cleandoc`), the document the function's source with the
docstring removed (signature, decorators and body kept, dedented). Like CodeSearchNet
(Husain et al. 2019), each query has exactly one relevant document and the other documents of
the split are the corpus.

Determinism: files in sorted order, functions in source order; a pair goes to eval iff the
SHA-256 of its file's relative path falls under `eval_fraction` (split by file, so methods of
one class never straddle the split); queries whose text was already seen (in either split)
are dropped; each split is then cut to its cap, so a split never depends on the other's cap.
Test suites and installed packages are skipped. As with the text corpus, the pairs are
identical across identical Python builds.

Metrics (one relevant document per query, rank r starting at 1): MRR@10 = mean(1/r if r <= 10),
nDCG@10 = mean(1/log2(r + 1) if r <= 10) (the ideal DCG is 1), Recall@100 = mean(r <= 100).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import pathlib
import sysconfig
import textwrap

import numpy as np

from encoders.errors import ConfigError

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
MIN_QUERY_CHARS = 20  # shorter docstrings ("Return x.") say too little to retrieve by
MIN_BODY_LINES = 2  # documents of signature + `pass` only are dropped


def _in_eval(relative_path: str, eval_fraction: float) -> bool:
  digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction


def _python_files(root: pathlib.Path) -> list[str]:
  """Relative POSIX paths of the .py files under `root` outside EXCLUDED_DIRS, sorted."""
  files = (p.relative_to(root) for p in root.glob("**/*.py") if p.is_file())
  return sorted(r.as_posix() for r in files if not EXCLUDED_DIRS.intersection(r.parts[:-1]))


def extract_pairs(source: str) -> list[tuple[str, str]]:
  """(docstring, source without the docstring) of every documented function in `source`."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  lines = source.splitlines()
  pairs = []
  for node in ast.walk(tree):
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    doc = ast.get_docstring(node, clean=False)
    if not doc or len(node.body) < 2:
      continue
    query = inspect.cleandoc(doc)
    docstring = node.body[0]
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    kept = (lines[start:docstring.lineno - 1] + lines[docstring.end_lineno:node.end_lineno])
    document = textwrap.dedent("\n".join(kept)).strip()
    if len(query) >= MIN_QUERY_CHARS and len(document.splitlines()) > MIN_BODY_LINES:
      pairs.append((query, document))
  return pairs


def load_pairs(root: str | None = None, *, eval_fraction: float = 0.2, max_train: int = 4000,
               max_eval: int = 1000) -> dict[str, list[tuple[str, str]]]:
  """{"train": [(query, document), ...], "eval": [...]} from the standard library (or `root`)."""
  if not 0.0 < eval_fraction < 1.0:
    raise ConfigError(f"data.retrieval.eval_fraction={eval_fraction}; must be in (0, 1)")
  base = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
  if not base.is_dir():
    raise ConfigError(f"data.retrieval.dir: directory '{base}' does not exist")
  splits: dict[str, list[tuple[str, str]]] = {"train": [], "eval": []}
  seen = set()
  for rel in _python_files(base):
    try:
      source = (base / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
      continue
    for query, document in extract_pairs(source):
      if query not in seen:
        seen.add(query)
        splits["eval" if _in_eval(rel, eval_fraction) else "train"].append((query, document))
  caps = {"train": max_train, "eval": max_eval}
  splits = {split: pairs[:caps[split]] for split, pairs in splits.items()}
  for split, pairs in splits.items():
    if caps[split] and not pairs:
      raise ConfigError(f"data.retrieval: no {split} pairs under '{base}' "
                        f"(eval_fraction={eval_fraction})")
  return splits


def relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """1-based rank of each query's relevant document; scores [queries, docs]. Ties count
  against the relevant document (pessimistic), so constant scores never look good."""
  scores = np.asarray(scores, np.float64)
  target = scores[np.arange(len(scores)), relevant]
  others = np.ones_like(scores, bool)
  others[np.arange(len(scores)), relevant] = False
  return 1 + ((scores >= target[:, None]) & others).sum(axis=1)


def retrieval_metrics(ranks: np.ndarray) -> dict[str, float]:
  """MRR@10, nDCG@10 and Recall@100 from the ranks of the relevant documents."""
  ranks = np.asarray(ranks, np.float64)
  top10 = ranks <= 10
  return {"mrr@10": float(np.mean(np.where(top10, 1.0 / ranks, 0.0))),
          "ndcg@10": float(np.mean(np.where(top10, 1.0 / np.log2(ranks + 1.0), 0.0))),
          "recall@100": float(np.mean(ranks <= 100))}


def evaluate_embeddings(queries: np.ndarray, documents: np.ndarray,
                        chunk: int = 1024) -> dict[str, float]:
  """Retrieval metrics of query i against all documents (document i relevant), by dot
  product (cosine for normalised embeddings); chunked over queries."""
  ranks = [relevant_ranks(queries[i:i + chunk] @ documents.T,
                          np.arange(i, min(i + chunk, len(queries))))
           for i in range(0, len(queries), chunk)]
  return retrieval_metrics(np.concatenate(ranks))
