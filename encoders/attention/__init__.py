"""Attention variants; importing this package registers them all."""

from encoders.attention import dense  # noqa: F401
from encoders.attention import kernelized, lowrank  # noqa: F401
from encoders.attention import layouts  # noqa: F401
from encoders.attention.base import Attention, dense_attention_mask  # noqa: F401
