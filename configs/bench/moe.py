"""MoE layer benchmark: dropless and capacity dispatch vs a dense FFN with the same active
parameters.

    python -m experiments.bench --config configs/bench/moe.py --workdir runs/bench/moe
    python -m experiments.bench --config configs/bench/moe.py:quick --workdir /tmp/bench

One FFN layer (experiments/bench/moe.py): E=8 experts, top-2, dim 256, expert width 1024, 4096
tokens (8 x 512), float32, forward + backward; the reference is a dense `mlp` FFN of width
top_k * 1024 (same parameters per token and same matmul FLOPs as the MoE's experts). Presets:
`full` and `quick` (4 experts of width 16, 16 tokens, dense and dropless; seconds). The
megablox row (Pallas TPU kernel) is measured on TPU only; elsewhere it is a `skipped` row, or,
with `interpret=True`, runs in Pallas interpret mode (a correctness run: its time says nothing
about a TPU).
"""

from configs.bench import check_preset, measurement

DENSE = "dense mlp, width k*ffn (same active params)"


def get_config(preset: str = "full"):
  check_preset(preset)
  config = measurement("moe", repeats=10, max_seconds=600.0)
  # (row label, model.ffn spec); `moe` specs get num_experts and top_k from below.
  config.variants = (
      (DENSE, dict(name="mlp")),
      ("moe dropless (blocked grouped matmul)",
       dict(name="moe", dispatch="dropless", grouped_matmul="blocked")),
      ("moe dropless (jax.lax.ragged_dot)",
       dict(name="moe", dispatch="dropless", grouped_matmul="ragged")),
      ("moe dropless (megablox, Pallas TPU)",
       dict(name="moe", dispatch="dropless", grouped_matmul="megablox")),
      ("moe capacity (factor 1.25)",
       dict(name="moe", dispatch="capacity", eval_capacity_factor=1.25)),
      ("moe expert choice (factor 1.0)",
       dict(name="moe", router="expert_choice", eval_capacity_factor=1.0)),
  )
  config.reference = DENSE
  config.num_experts = 8
  config.top_k = 2
  config.dim = 256
  config.ffn_dim = 1024  # each expert's width; the dense FFN's is top_k * ffn_dim
  config.batch_size = 8
  config.length = 512
  config.interpret = False  # megablox off TPU: False = skipped, True = run interpreted (slow)
  if preset == "quick":
    config.variants = config.variants[:2]
    config.update(num_experts=4, dim=16, ffn_dim=16, batch_size=1, length=16, repeats=1)
  return config
