"""Sentence-embedding heads: pooling, optional projection, truncation, L2 normalisation.

- `embedding`: one vector per sequence from the last layer. Pooling `cls` (BERT), `mean`
  (Sentence-BERT, Reimers & Gurevych 2019), `max`, or `latent_attention` (NV-Embed, Lee et al.
  2024: the tokens attend to a trainable latent array, an MLP follows, then mean pooling).
  `output_dim` keeps the first dims only (Matryoshka Representation Learning, Kusupati et al.
  2022: with a Matryoshka-trained model every prefix is an embedding of its own);
  `normalize` L2-normalises after truncation, so the truncated vector is the normalised prefix
  of the full one.
- `embedding_layers`: reads every layer's output (`reads_all_layers`); the embedding layer
  is 0, the last layer is the final hidden state (after any final norm). With `layers=()` it
  pools a learned softmax-weighted mix of all of them (`layer_mix`, ELMo's scalar mix, Peters
  et al. 2018) and returns [batch, dim]. With `layers=(l1, l2, ...)` (block counts, 1-based)
  it returns [len(layers), batch, dim]: one embedding per listed depth, each from its own
  sub-layer head, for 2D Matryoshka training over layers x dims (2DMSE, Li et al. 2024;
  Starbucks, Zhuang et al. 2024; the schedules live in `experiments/tasks/embed.py`).

Heads return float32 arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.errors import ConfigError
from encoders.ffn import activation
from encoders.heads.pooling import pool
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

POOLINGS = ("cls", "mean", "max", "latent_attention")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis (torch.nn.functional.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def max_pool(hidden: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mask-aware max over tokens (padding never wins)."""
  if mask is None:
    return hidden.max(axis=1)
  return jnp.where(mask[..., None], hidden, jnp.finfo(hidden.dtype).min).max(axis=1)


class LatentAttentionPool(nn.Module):
  """NV-Embed's latent attention layer (Lee et al. 2024, "NV-Embed"): queries are the token
  states, keys = values = a trainable latent array [num_latents, dim]; multi-head
  softmax(Q K^T / sqrt(d)) V, then an MLP (Linear -> GELU -> Linear), then mean pooling."""
  config: ModelConfig
  num_latents: int
  num_heads: int

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array | None) -> jax.Array:
    c = self.config
    if c.dim % self.num_heads:
      raise ConfigError(f"model.head.latent_heads={self.num_heads} must divide model.dim={c.dim}")
    latents = self.param("latents",
                         sharding.param(nn.initializers.normal(c.init_std), (None, "embed")),
                         (self.num_latents, c.dim), c.params_dtype)
    x = hidden.astype(jnp.float32)
    q = x.reshape(*x.shape[:2], self.num_heads, -1)
    kv = latents.astype(jnp.float32).reshape(self.num_latents, self.num_heads, -1)
    weights = jax.nn.softmax(jnp.einsum("bthd,lhd->bhtl", q, kv) / jnp.sqrt(q.shape[-1]), -1)
    out = jnp.einsum("bhtl,lhd->bthd", weights, kv).reshape(x.shape)
    dense = lambda n, name: nn.Dense(  # noqa: E731
        n, kernel_init=sharding.param(nn.initializers.normal(c.init_std), ("embed", "mlp")),
        bias_init=sharding.param(nn.initializers.zeros, ("mlp",)), name=name)
    out = dense(c.dim, "mlp_out")(activation("gelu")(dense(c.mlp_dim, "mlp_in")(out)))
    return pool(out, mask, "mean")


class Pooler(nn.Module):
  """pooling -> optional linear projection -> keep `output_dim` dims -> optional L2 norm."""
  config: ModelConfig
  pooling: str
  projection_dim: int
  output_dim: int
  normalize: bool
  num_latents: int
  latent_heads: int

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array | None) -> jax.Array:
    c = self.config
    if self.pooling not in POOLINGS:
      raise ConfigError(f"model.head.pooling={self.pooling!r}; allowed: {', '.join(POOLINGS)}")
    hidden = hidden.astype(jnp.float32)
    if self.pooling == "latent_attention":
      x = LatentAttentionPool(c, self.num_latents, self.latent_heads, name="latent")(hidden, mask)
    elif self.pooling == "max":
      x = max_pool(hidden, mask)
    else:
      x = pool(hidden, mask, self.pooling)
    if self.projection_dim:
      x = nn.Dense(self.projection_dim, name="projection",
                   kernel_init=sharding.param(nn.initializers.normal(c.init_std),
                                              ("embed", None)),
                   bias_init=sharding.param(nn.initializers.zeros, (None,)))(x)
    width = x.shape[-1]
    if not 0 <= self.output_dim <= width:
      raise ConfigError(f"model.head.output_dim={self.output_dim} must be in [0, {width}]")
    if self.output_dim:
      x = x[..., :self.output_dim]
    return l2_normalize(x) if self.normalize else x


@register("head", "embedding")
class EmbeddingHead(nn.Module):
  config: ModelConfig
  pooling: str = "mean"  # cls | mean | max | latent_attention
  normalize: bool = True  # L2-normalise (cosine similarity = dot product)
  projection_dim: int = 0  # linear projection after pooling; 0 = none (dim stays model.dim)
  output_dim: int = 0  # keep only the first dims (Matryoshka truncation); 0 = all
  num_latents: int = 512  # latent_attention: size of the latent array (NV-Embed: 512)
  latent_heads: int = 8  # latent_attention: heads (NV-Embed: 8)
  reads_all_layers = False

  def pooler(self, name: str) -> Pooler:
    return Pooler(self.config, self.pooling, self.projection_dim, self.output_dim,
                  self.normalize, self.num_latents, self.latent_heads, name=name)

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    return self.pooler("pooler")(hidden, inputs.get("mask"))


@register("head", "embedding_layers")
class LayerEmbeddingHead(EmbeddingHead):
  layers: tuple[int, ...] = ()  # () = layer_mix of all layers; else depths for 2D Matryoshka
  reads_all_layers = True

  @nn.compact
  def __call__(self, hidden: jax.Array, *, inputs: Mapping[str, jax.Array],
               embedding: jax.Array | None = None, all_layers: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    c, mask = self.config, inputs.get("mask")
    # The last layer reads the final (normed) hidden states, the others the block outputs.
    states = lambda layer: hidden if layer == c.num_layers else all_layers[layer]  # noqa: E731
    if not self.layers:  # layer_mix: softmax(w) . layers, times a learned scale (ELMo)
      logits = self.param("mix_logits", nn.initializers.zeros, (c.num_layers + 1,))
      scale = self.param("mix_scale", nn.initializers.ones, ())
      stacked = jnp.stack([states(layer) for layer in range(c.num_layers + 1)])
      mixed = scale * jnp.einsum("l,lbtd->btd", jax.nn.softmax(logits),
                                 stacked.astype(jnp.float32))
      return self.pooler("pooler")(mixed, mask)
    bad = [layer for layer in self.layers if not 1 <= layer <= c.num_layers]
    if bad:
      raise ConfigError(f"model.head.layers={tuple(self.layers)}: {bad[0]} is not a block "
                        f"count in [1, {c.num_layers}]")
    return jnp.stack([self.pooler(f"layer_{layer}")(states(layer), mask)
                      for layer in self.layers])
