"""The import structure: no circle among the modules of encoders/ and experiments/, importing the
config loads no variant or kernel, and the runner imports no variant module."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.test_structure import package_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("encoders", "experiments")
# The variant families (encoders/builtin_variants.py) and everything below them.
VARIANT_PACKAGES = ("encoders.attention", "encoders.connections", "encoders.ffn",
                    "encoders.heads", "encoders.mixers", "encoders.moe", "encoders.norms",
                    "encoders.position")
# Runner modules that use one variant's code on purpose: benchmarks time named variants, sparse
# upcycling converts a dense checkpoint into MoE experts, the embedding task's similarity
# normalises as the embedding head does.
RUNNER_ALLOWED = ("experiments.bench", "experiments.init_from", "experiments.tasks.embed")


def imported(name: str, path: str, known: dict[str, str]) -> set[str]:
  """The known modules `name` imports anywhere (function-local imports too), except under
  `if TYPE_CHECKING:`; `from a import b` counts as a.b when that is a module, else as a."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  skipped = {id(node) for branch in ast.walk(tree)
             if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
             for statement in branch.body for node in ast.walk(statement)}
  package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
  out = set()
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.Import):
      out |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - node.level + 1] + ([node.module] if node.module else [])
        module = ".".join(base)
      else:
        module = node.module
      members = {f"{module}.{alias.name}" for alias in node.names}
      out |= members if members <= set(known) else {module} | members
  return {target for target in out if target in known and target != name}


def largest_cycle(graph: dict[str, set[str]]) -> list[str]:
  """The largest strongly connected component of more than one module (Tarjan), or []."""
  index, low, stack, on_stack, largest = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1 and len(component) > len(largest):
        largest[:] = sorted(component)

  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(max(limit, 10_000))
  try:
    for v in graph:
      if v not in index:
        visit(v)
  finally:
    sys.setrecursionlimit(limit)
  return largest


def import_graph() -> dict[str, set[str]]:
  known = package_graph.modules(ROOT, PACKAGES)
  return {name: imported(name, path, known) for name, path in known.items()}


def test_encoders_and_experiments_import_graph_is_acyclic():
  graph = import_graph()
  assert len(graph) > 100 and "encoders.config" in graph  # the whole tree was read
  assert largest_cycle(graph) == []


def test_cycle_finder_sees_function_local_imports(tmp_path):
  """The check would catch the old circle: the registry's loader importing the families inside
  a function, the families importing the registry."""
  graph = {"a.registry": {"a.family"}, "a.family": {"a.registry"}, "a.other": set()}
  assert largest_cycle(graph) == ["a.family", "a.registry"]
  source = "def load():\n  from encoders import ffn\n"
  known = {"encoders.registry": "", "encoders.ffn": ""}
  path = tmp_path / "registry.py"
  path.write_text(source, encoding="utf-8")
  assert imported("encoders.registry", str(path), known) == {"encoders.ffn"}


def test_the_runner_imports_no_variant_module():
  graph = import_graph()
  offenders = {(module, target) for module, targets in graph.items()
               if module.startswith("experiments") and not module.startswith(RUNNER_ALLOWED)
               for target in targets if target.startswith(VARIANT_PACKAGES)}
  assert offenders == set()


def test_importing_the_config_loads_no_variant_or_kernel_module():
  code = ("import sys, encoders.config\n"
          "print([m for m in sys.modules if m.startswith(" + repr(VARIANT_PACKAGES) + ") or "
          "m.startswith('jax.experimental.pallas')])")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.stdout.strip() == "[]"
