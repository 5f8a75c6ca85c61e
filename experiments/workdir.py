"""The workdir belongs to one run: its `config.json` says which (every variant option
included), and one process at a time.

`exclusive(workdir)` takes an exclusive lock on `<workdir>/lock` (process 0, `flock`) for the
whole run: a second run started on a busy workdir is refused in one line naming the holder's
PID and host, before it reads or writes anything else. The kernel releases the lock when the
holder exits in any way (SIGKILL included), so a crashed run's lock is taken over by the next.

Re-running the same command resumes. A different config in a workdir that holds a run is
refused with the differing fields named, so results are never mixed, unless `overwrite=True`
(`--overwrite`), which clears the old run's checkpoints, metrics and events first. Fields that
only steer how this invocation runs (not what is computed) may change on resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator

import jax
import ml_collections

from encoders.config import resolve_model
from encoders.errors import ConfigError

# Dotted fields that may differ between invocations of the same run.
RESUMABLE_FIELDS = frozenset({
    "progress_bar", "train.steps_per_run", "train.async_checkpoints", "train.save_on_sigterm",
    "train.log_every", "eval.max_batches",
    # how the same computation is laid out: a run may resume on another mesh (elastic restore)
    "mesh.data", "mesh.fsdp", "mesh.tensor", "mesh.expert", "model.remat",
    "train.grad_accum_steps",
    # which kernel computes the same attention (`auto` picks one per backend)
    "model.attention.implementation", "model.attention.interpret",
    "model.attention.kernel_block_size", "model.attention.scan_method",
    # which kernel computes the same MoE experts (`auto` picks one per backend)
    "model.ffn.grouped_matmul", "model.ffn.interpret",
})
# Fields added after runs were recorded: absent from an older config.json, they read as these
# defaults (which compute what the older code did), so such a run still resumes.
ADDED_FIELDS = {
    "model.attention_output_dropout_rate": None, "model.embed_dim": 0,
    "model.init_method": "normal", "model.skip_first_prenorm": False,
    "train.weight_decay_scale": "lr",
}
LOCK_FILE = "lock"
RUN_OUTPUTS = ("checkpoints", "checkpoints_unreadable", "metrics.jsonl", "tensorboard")


def _flatten(tree, prefix: str = "") -> dict[str, object]:
  if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
    # model.layer_pattern: entry i's fields as `model.layer_pattern[i].attention.window`
    return {k: v for i, entry in enumerate(tree)
            for k, v in _flatten(entry, f"{prefix}[{i}]").items()}
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    name = f"{prefix}.{key}" if prefix else key
    if isinstance(value, (dict, list)) and value:
      out.update(_flatten(value, name))
    else:
      out[name] = value
  return out


def differences(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for every field that is not allowed to change on resume."""
  a, b = _flatten(old), _flatten(new)
  a = {**{k: v for k, v in ADDED_FIELDS.items() if k in b}, **a}
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and resumable_name(k) not in RESUMABLE_FIELDS]


def resumable_name(field: str) -> str:
  """A layer pattern entry's field as the model's: `model.layer_pattern[2].attention.x` ->
  `model.attention.x` (a kernel may change per layer as it may for the whole model)."""
  return re.sub(r"\.layer_pattern\[\d+\]", "", field)


def resolved(record: dict) -> dict:
  """A config (as JSON data) with every variant option filled in (`resolve_model`), as JSON
  data again; unchanged if its variants do not validate (e.g. an older run's config.json)."""
  if "model" not in record:
    return record
  try:
    model = resolve_model(record["model"])
  except ConfigError:
    return record
  return json.loads(json.dumps({**record, "model": model}))


def prepare(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> None:
  """Creates the workdir, checks it holds this run (or clears it), writes config.json with the
  variants' options resolved (defaults included). A config.json written before options were
  resolved compares resolved too, so such a run still resumes."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  new = resolved(json.loads(config.to_json_best_effort()))
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    changed = differences(resolved(old), new)
    if changed and not overwrite:
      raise ConfigError(f"{path}: this workdir holds a different run ({'; '.join(changed[:4])}"
                        f"{' ...' if len(changed) > 4 else ''}); use a new workdir or "
                        "--overwrite")
    if changed and jax.process_index() == 0:
      for name in RUN_OUTPUTS:
        target = os.path.join(workdir, name)
        if os.path.isdir(target):
          shutil.rmtree(target)
        elif os.path.exists(target):
          os.remove(target)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def exclusive(workdir: str) -> Iterator[None]:
  """Holds `<workdir>/lock` while the block runs (process 0; the others follow its lead).

  Raises a one-line ConfigError when another process holds it. The file stays (removing it
  would race with a process opening it); what it holds only names the current holder.
  """
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
      raise ConfigError(f"workdir {workdir} is in use by another run ({holder}); wait for it "
                        "to end or use another workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock

