"""Mixture-of-experts FFN (`model.ffn.name = "moe"`): routers, dropless and capacity dispatch,
aux losses (layer.py, routers.py), MoE placement every k-th block (placement.py) and sparse
upcycling of dense checkpoints (upcycle.py)."""

from encoders.moe.layer import MoE  # noqa: F401  (registers "moe")
