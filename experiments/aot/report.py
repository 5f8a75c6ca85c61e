"""The compile report (experiments/aot/compile.py) as text: one block per step."""

from __future__ import annotations

from experiments.aot.targets import GIB


def _gib(value: float) -> str:
  return f"{value / GIB:.2f} GiB"


def fit_line(memory: dict) -> str:
  """"fits: 61% of 79.1 GiB" or "does not fit by 12.3 GiB"."""
  total, capacity = memory["total_bytes"], memory["device_memory_bytes"]
  if memory["fits"]:
    return f"fits: {100 * total / capacity:.0f}% of {_gib(capacity)}"
  return f"does not fit by {_gib(total - capacity)} ({_gib(capacity)} per device)"


def _flops(value) -> str:
  return "n/a" if value is None else f"{value:.3e}"


def step_text(step: dict) -> list[str]:
  lines = [f"{step['step']} step: " + (f"compiled in {step['compile_seconds']:.1f} s"
                                       if step.get("compiled") else
                                       f"NOT compiled ({step['compile_seconds']:.1f} s): "
                                       f"{step['error']}")]
  if step.get("note"):
    lines.append(f"  note: {step['note']}")
  if step.get("compiled"):
    m = step["memory"]
    lines.append(f"  memory per device: arguments {_gib(m['argument_bytes'])}, outputs "
                 f"{_gib(m['output_bytes'])}, temporaries {_gib(m['temp_bytes'])}, code "
                 f"{_gib(m['code_bytes'])}, donated -{_gib(m['alias_bytes'])}; total "
                 f"{_gib(m['total_bytes'])}: {fit_line(m)}")
    uncounted = (f" ({step['uncounted_kernels']} kernel calls without a cost: not counted)"
                 if step["uncounted_kernels"] else "")
    lines.append(f"  FLOPs per device: {_flops(step['flops_per_device'])} ours (matrix products"
                 f" and kernels, every layer){uncounted}; XLA: "
                 f"{_flops(step['xla_flops_per_device'])}")
    lines.append(f"  bytes per device: {_flops(step['bytes_per_device'])} ours (products' "
                 f"operands and results, a lower bound); XLA: "
                 f"{_flops(step['xla_bytes_per_device'])}")
    if "estimated_step_seconds" in step:
      lines.append(f"  roofline ESTIMATE (not measured): {1e3 * step['estimated_step_seconds']:.3f}"
                   f" ms per step ({step['bound']}-bound), "
                   f"{step['estimated_tokens_per_second']:.3g} tokens/s per device, MFU "
                   f"{100 * step['estimated_mfu']:.0f}%")
    if step.get("xla_estimated_step_seconds"):
      lines.append(f"  XLA's cost model (TPU): {1e3 * step['xla_estimated_step_seconds']:.3f} ms "
                   "per step (a scanned layer and the kernels counted as XLA sees them)")
  for choice in step.get("choices", ()):
    reason = f" ({choice['reason']})" if choice["reason"] else ""
    lines.append(f"  {choice['kind']} {choice['where']}: {choice['requested']} -> "
                 f"{choice['chosen']}{reason}")
  return lines


def text(result: dict) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in result["mesh"].items())
  lines = [f"target {result['target']}: {result['num_devices']} x {result['chip']}; mesh "
           f"{mesh}; {result['dtype']}, peak {result['peak_flops_per_second'] / 1e12:.0f} "
           f"TFLOP/s, {result['bandwidth_bytes_per_second'] / 1e12:.2f} TB/s per device",
           f"config {result.get('config', '')}: {result['num_params']:,} parameters, train batch"
           f" {result['train_batch_size']} x {result['length']} tokens (program built in "
           f"{result['build_seconds']:.1f} s)"]
  for step in result["steps"]:
    lines += step_text(step)
  if "find_batch" in result:
    found = result["find_batch"]
    tried = ", ".join(f"{p['per_device_batch']}:{'fits' if p['fits'] else 'no'}"
                      for p in found["probes"])
    lines.append(f"largest per-device train batch that fits: "
                 f"{found['largest_per_device_batch']} (probes {tried})")
  return "\n".join(lines)
