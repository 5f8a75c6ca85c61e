"""Shared fixtures: a tiny model config builder."""

from __future__ import annotations

import os

import pytest

# Tests run on CPU; keep XLA from grabbing every core for intra-op threads of tiny ops.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from encoders.config import ModelConfig  # noqa: E402


def tiny_config(**overrides) -> ModelConfig:
  base = dict(vocab_size=37, max_length=24, dim=32, num_layers=2, num_heads=4, mlp_dim=48,
              dropout_rate=0.0, head=dict(name="mlm"))
  base.update(overrides)
  return ModelConfig.from_dict(base)


@pytest.fixture
def make_config():
  return tiny_config
