"""The package-level import graph of encoders/ and experiments/, from the code:

    python scripts/package_graph.py            # a mermaid flowchart (docs/design.md holds it)
    python scripts/package_graph.py --text     # one line per package: what it imports

A node is a package (its own modules, `__init__.py` included; subpackages are nodes of their
own), an arrow A --> B says that some module of A imports a module of B. Every import statement
counts, function-local ones included, except those under `if TYPE_CHECKING:` (annotations
only, never executed). tests/test_structure.py checks that docs/design.md shows this output.
"""

from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("encoders", "experiments")


def modules(root: str = ROOT, packages=PACKAGES) -> dict[str, str]:
  """Dotted module name -> file path of every module under `packages` (a package by its name)."""
  found = {}
  for package in packages:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for file in files:
        if file.endswith(".py"):
          path = os.path.join(folder, file)
          name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
          found[name.removesuffix(".__init__")] = path
  return found


def imported_names(name: str, path: str) -> set[str]:
  """The dotted names a module imports (absolute; `from a import b` gives a and a.b), leaving
  out the imports under `if TYPE_CHECKING:`."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  skipped = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
  parts = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
  names = set()
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else [])
                      ) if node.level else node.module
      names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
  return names


def package_of(module: str, known: dict[str, str]) -> str:
  """The package a module belongs to: itself if it is a package, else its parent."""
  return module if known[module].endswith("__init__.py") else module.rpartition(".")[0]


def package_graph(root: str = ROOT) -> dict[str, set[str]]:
  """Package -> the other packages its modules import (every package of `PACKAGES` a key)."""
  known = modules(root)
  graph = {package_of(m, known): set() for m in known}
  for module, path in known.items():
    source = package_of(module, known)
    for name in imported_names(module, path):
      if name in known:
        target = package_of(name, known)
        if target != source:
          graph[source].add(target)
  return graph


def node(package: str) -> str:
  return package.replace(".", "_")


def mermaid(graph: dict[str, set[str]]) -> str:
  """A mermaid flowchart: one node per package (its folder), one arrow per importing pair."""
  lines = ["flowchart LR"]
  lines += [f'  {node(p)}["{p.replace(".", "/")}/"]' for p in sorted(graph)]
  lines += [f"  {node(p)} --> {node(q)}" for p in sorted(graph) for q in sorted(graph[p])]
  return "\n".join(lines)


def text(graph: dict[str, set[str]]) -> str:
  return "\n".join(f"{p.replace('.', '/')}/ -> "
                   + (", ".join(q.replace(".", "/") + "/" for q in sorted(graph[p])) or "-")
                   for p in sorted(graph))


if __name__ == "__main__":
  print(text(package_graph()) if "--text" in sys.argv[1:] else mermaid(package_graph()))
