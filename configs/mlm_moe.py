"""MLM (configs/mlm.py) with a mixture-of-experts FFN (encoders/moe) in every other block.

    python -m experiments.main --config configs/mlm_moe.py:small --workdir runs/mlm_moe

Sparse upcycling of a finished dense MLM run (same preset; its FFN is the expert type):

    python -m experiments.main --config configs/mlm.py:small --workdir runs/mlm
    python -m experiments.main --config configs/mlm_moe.py:small --workdir runs/mlm_upcycled \\
        --config.init_from.workdir=runs/mlm

Routers, dispatch and expert shapes are `model.ffn` options (README, "moe" row), e.g.
`--config.model.ffn.router=expert_choice --config.model.ffn.capacity_factor=1.0`.
"""

from configs import mlm


def get_config(preset: str = "small"):
  config = mlm.get_config(preset)
  config.model.ffn = dict(
      name="moe",
      num_experts=8,  # experts per MoE block
      top_k=0,  # experts per token; 0 = the router's default (2 topk/expert_choice, 1 else)
      router="topk",  # topk | switch | expert_choice | hash
      order="softmax_then_topk",  # | topk_then_softmax
      renormalize=True,  # top-k gates sum to 1 (exact upcycling)
      dispatch="dropless",  # dropless | capacity
      capacity_factor=1.25,  # capacity dispatch and expert choice (training)
      eval_capacity_factor=2.0,  # ... at evaluation
      expert="mlp",  # mlp | glu
      activation="gelu",
      expert_dim=0,  # 0 = model.mlp_dim; smaller = fine-grained experts
      num_shared_experts=0,  # always-on experts
      every=2,  # MoE in every 2nd block (GShard / Switch), dense FFN in the others
      router_jitter=0.0,
      router_noise=0.0,
  )
  # Switch Transformer's 0.01 for the balancing loss, ST-MoE's 0.001 for the z-loss.
  config.train.aux_loss_weights = dict(load_balance_loss=0.01, router_z_loss=0.001)
  return config
