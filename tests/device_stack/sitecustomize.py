"""The accelerator machine's Python stack, simulated: put this folder first on PYTHONPATH and name
the packages that machine lacks in DEVICE_STACK_MISSING (comma-separated top-level module names);
every import of them, or of anything inside them, then raises ModuleNotFoundError as it would
there. tests/test_device_check.py runs scripts/device_check.sh under it.
"""

import importlib.abc
import os
import sys

MISSING = frozenset(filter(None, os.environ.get("DEVICE_STACK_MISSING", "").split(",")))


class MissingPackages(importlib.abc.MetaPathFinder):
  """Finds the MISSING packages before any other finder and refuses them."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname.partition(".")[0] in MISSING:
      raise ModuleNotFoundError(f"No module named {fullname!r} (not on the simulated device "
                                "machine)", name=fullname)
    return None


if MISSING:
  sys.meta_path.insert(0, MissingPackages())
