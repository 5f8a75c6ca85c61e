"""The repository's structure: which packages may import which, docs/design.md's dependency
diagram is the code's (scripts/package_graph.py), and the project stands alone (no file cites an
issue or pull request by number: say what and why instead)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_package_graph():
  spec = importlib.util.spec_from_file_location(
      "package_graph", os.path.join(ROOT, "scripts", "package_graph.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


package_graph = load_package_graph()


def test_the_library_and_the_runner_import_nothing_from_configs():
  """configs/ holds runnable configs: the runner takes their settings as arguments (a study its
  bench settings), so editing a preset changes only the runs that name it."""
  imports = {name: package_graph.imported_names(name, path)
             for name, path in package_graph.modules(ROOT).items()}
  offending = {name: sorted(n for n in names if n == "configs" or n.startswith("configs."))
               for name, names in imports.items()}
  assert {name: names for name, names in offending.items() if names} == {}
  assert "experiments.bench.attention" in imports["experiments.study"]  # the parser sees imports


def test_design_md_shows_the_package_graph_of_the_code():
  with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
    text = f.read()
  shown = re.search(r"<!-- package-graph: start -->\n```mermaid\n(.*?)\n```\n"
                    r"<!-- package-graph: end -->", text, re.S)
  assert shown, "docs/design.md lost its package-graph block"
  assert shown.group(1) == package_graph.mermaid(package_graph.package_graph(ROOT)), (
      "the package imports changed: paste `python scripts/package_graph.py` into docs/design.md")


# An issue or pull request cited by number ("issue 17", "issue #17", "#17", "PR 12", "pull
# request 12") or as a thing of its own ("the issue's target", "(issue: ..."). Hex colours and
# anchors (#1f77b4, #section) do not match.
CITATION = re.compile(
    r"\bissues?\s*#?\d+|(?<![\w&/#])#\d{1,5}(?![\w])|\b(?:PR|pull request)\s*#?\d+"
    r"|\b(?:the|this|that|companion|parent|original)\s+issue(?:'s)?\b|\(issue\b",
    re.IGNORECASE)


def tracked_text_files() -> list[str]:
  try:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout: no list of tracked files")
  paths = []
  for path in filter(None, listed.decode().split("\0")):
    with open(os.path.join(ROOT, path), "rb") as f:
      head = f.read(8192)
    if b"\0" not in head:  # text, not binary (images, npz, checkpoints)
      paths.append(path)
  return paths


def test_no_file_cites_an_issue():
  assert CITATION.search("as issue 17 showed") and CITATION.search("see #20")
  assert CITATION.search("the issue's target") and CITATION.search("(issue: H200 ...")
  assert not CITATION.search("color #1f77b4, docs/x.md#section, x[#]")
  own = os.path.relpath(__file__, ROOT)
  found = []
  for path in tracked_text_files():
    if path == own:
      continue
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        if CITATION.search(line):
          found.append(f"{path}:{number}: {line.strip()[:120]}")
  assert found == []
