"""Attention variants; importing this package registers them all."""

from encoders.attention import (  # noqa: F401
    dense,  # noqa: F401
    kernelized,
    layouts,  # noqa: F401
    lowrank,
)
from encoders.attention.base import Attention, dense_attention_mask  # noqa: F401
