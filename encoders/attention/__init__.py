"""Attention variants; importing this package registers them all."""

from encoders.attention import (  # noqa: F401
    dense,  # noqa: F401
    kernelized,
    lowrank,
    sparse_variants,  # noqa: F401
)
from encoders.attention.base import Attention, dense_attention_mask  # noqa: F401
