"""Metric sinks: `metrics.jsonl` (one JSON object per line), TensorBoard events (tensorboardX,
no TensorFlow needed) and a tqdm progress bar. Only process 0 writes. TensorBoard events and the
bar are extras: without tensorboardX (or tqdm) a run says so once and writes metrics.jsonl (and
plain eval lines) alone, as on an accelerator machine with only the jax stack.

On resume, lines after the restored step are dropped first: the resumed run writes them again,
identically, so the file always reads as one uninterrupted run. So are the `status` records of
earlier invocations (each invocation ends with an `info` record saying how it ended: the last
one in the file describes the run).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import jax
import numpy as np


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """All records; a truncated last line (a run killed mid-write) is dropped."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      if number < len(lines):
        raise ValueError(f"{path}:{number}: not a JSON record ({error})") from None
  return records


def scalars(metrics: Mapping[str, float | str]) -> dict[str, float | str]:
  """Floats; a vector metric (e.g. MoE `aux/expert_load`) becomes `name/0`, `name/1`, ...;
  strings (a run's `status`) are kept as they are."""
  out = {}
  for name, value in metrics.items():
    if isinstance(value, str):
      out[name] = value
      continue
    flat = np.asarray(value).reshape(-1)
    if np.ndim(value) == 0:
      out[name] = float(flat[0])
    else:
      out.update({f"{name}/{i}": float(v) for i, v in enumerate(flat)})
  return out


class PlainProgress:
  """What the writer asks of a tqdm bar, without tqdm: eval lines printed, no bar."""

  def set_postfix(self, *args, **kwargs) -> None:
    del args, kwargs

  def update(self, steps: int) -> None:
    del steps

  def write(self, text: str) -> None:
    print(text, flush=True)

  def close(self) -> None:
    pass


def progress_bar(total_steps: int, start_step: int, progress: bool):
  """A tqdm bar, or `PlainProgress` where tqdm is not installed."""
  try:
    import tqdm  # pylint: disable=import-outside-toplevel  (optional: not on every machine)
  except ImportError:
    if progress:
      print("note: tqdm is not installed; no progress bar", flush=True)
    return PlainProgress()
  return tqdm.tqdm(total=total_steps, initial=start_step, disable=not progress,
                   dynamic_ncols=True, desc="train")


def tensorboard_writer(directory: str):
  """A tensorboardX SummaryWriter, or None (with a note) where tensorboardX is not installed."""
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("note: tensorboardX is not installed; no TensorBoard events (metrics.jsonl has "
          "every record)", flush=True)
    return None
  return SummaryWriter(directory)


class MetricsWriter:
  """Writes `{"step": s, "split": "train"|"eval", **metrics}` records."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0,
               progress: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    if not self.active:
      return
    kept = [r for r in read_jsonl(self.path) if r["step"] <= start_step and "status" not in r]
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self.path)
    self.file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    self.tensorboard = tensorboard_writer(os.path.join(workdir, "tensorboard"))
    self.bar = progress_bar(total_steps, start_step, progress)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.active:
      return
    clean = scalars(metrics)
    self.file.write(json.dumps({"step": step, "split": split, **clean}) + "\n")
    self.file.flush()
    for name, value in clean.items() if self.tensorboard is not None else ():
      if not isinstance(value, str) and math.isfinite(value):
        self.tensorboard.add_scalar(f"{split}/{name}", value, step)
    if split == "train":
      self.bar.set_postfix({k: f"{clean[k]:.4g}" for k in ("loss", "steps_per_sec")
                            if k in clean}, refresh=False)
    else:
      self.bar.write(f"step {step} {split}: " + " ".join(
          f"{k}={v}" if isinstance(v, str) else f"{k}={v:.4f}" for k, v in sorted(clean.items())))

  def advance(self, steps: int) -> None:
    if self.active:
      self.bar.update(steps)

  def close(self) -> None:
    if self.active:
      self.bar.close()
      self.file.close()
      if self.tensorboard is not None:
        self.tensorboard.close()
