"""The Encoder: embeddings -> blocks (joined by a connection) -> final norm, and a Model that
puts a head on it.

Every choice comes from `ModelConfig`; each variant kind is looked up in the registry, so
swapping `model.attention.name` (or ffn, norm, position, connection, head) changes nothing else.
With the `residual` connection and `scan_layers`, identical blocks run under `nn.scan`, so a
deep model compiles as fast as one block; parameters then carry a leading `layers` axis.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import sharding
from encoders.config import ModelConfig


class Block(nn.Module):
  """One transformer block: attention and FFN sub-layers, each residual.

  `pre` norm: x + f(norm(x)) (Xiong et al. 2020); `post` norm: norm(x + f(x)) (original BERT).
  Returns (x, aux) where aux holds the FFN's auxiliary losses and metrics.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x, mask, segment_ids, positions, deterministic: bool):
    c = self.config
    attention = c.build("attention", name="attention")
    ffn = c.build("ffn", name="ffn")
    dropout = nn.Dropout(c.dropout_rate)

    def attend(h):
      y = attention(h, mask=mask, segment_ids=segment_ids, positions=positions,
                    deterministic=deterministic)
      return dropout(y, deterministic=deterministic)

    if c.norm_position == "pre":
      x = x + attend(c.build("norm", name="attention_norm")(x))
      y, aux = ffn(c.build("norm", name="ffn_norm")(x), deterministic=deterministic)
      x = x + dropout(y, deterministic=deterministic)
    else:
      x = c.build("norm", name="attention_norm")(x + attend(x))
      y, aux = ffn(x, deterministic=deterministic)
      x = c.build("norm", name="ffn_norm")(x + dropout(y, deterministic=deterministic))
    return sharding.constrain(x, sharding.HIDDEN), aux


class Encoder(nn.Module):
  """Token (+ type, + absolute position) embeddings, `num_layers` blocks, final norm.

  Call: `encoder(tokens, mask=None, segment_ids=None, positions=None, type_ids=None,
  deterministic=True) -> (hidden [batch, length, dim], aux)`; aux sums each block's FFN aux.
  """
  config: ModelConfig

  def setup(self):
    c = self.config
    self.token_embed = nn.Embed(
        c.vocab_size, c.dim, dtype=c.compute_dtype, param_dtype=c.params_dtype,
        embedding_init=sharding.param(nn.initializers.normal(c.init_std), ("vocab", "embed")))
    if c.type_vocab_size:
      self.type_embed = nn.Embed(
          c.type_vocab_size, c.dim, dtype=c.compute_dtype, param_dtype=c.params_dtype,
          embedding_init=sharding.param(nn.initializers.normal(c.init_std), ("vocab", "embed")))
    if c.variant("position").where == "embeddings":
      self.position = c.build("position")
    if c.embed_norm:
      self.embed_norm = c.build("norm")
    self.dropout = nn.Dropout(c.dropout_rate)
    if self.scanned:
      self.blocks = nn.scan(
          Block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
          length=c.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(c)
    else:
      self.blocks = [Block(c) for _ in range(c.num_layers)]
      # connections[i] builds block i's input from i + 1 tensors; the last one the output.
      self.connections = [c.build("connection", depth=i + 1) for i in range(c.num_layers + 1)]
    if c.norm_position == "pre":
      self.final_norm = c.build("norm")

  @property
  def scanned(self) -> bool:
    return self.config.scan_layers and not self.config.variant("connection").keeps_history

  @property
  def embedding_table(self) -> jax.Array:
    return self.token_embed.embedding

  def __call__(self, tokens: jax.Array, *, mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               type_ids: jax.Array | None = None, deterministic: bool = True):
    c = self.config
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = self.token_embed(tokens)
    if c.type_vocab_size:
      x = x + self.type_embed(jnp.zeros_like(tokens) if type_ids is None else type_ids)
    if c.variant("position").where == "embeddings":
      x = self.position(x, positions)
    if c.embed_norm:
      x = self.embed_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    x = sharding.constrain(x.astype(c.compute_dtype), sharding.HIDDEN)

    if self.scanned:
      x, aux = self.blocks(x, mask, segment_ids, positions, deterministic)
      aux = jax.tree.map(lambda a: a.sum(0), aux)
    else:
      history, auxes = [x], []
      keeps_history = c.variant("connection").keeps_history
      for block, connection in zip(self.blocks, self.connections):
        y, block_aux = block(connection(history), mask, segment_ids, positions, deterministic)
        history = history + [y] if keeps_history else [y]
        auxes.append(block_aux)
      x = self.connections[-1](history)
      aux = jax.tree.map(lambda *a: sum(a), *auxes)
    if c.norm_position == "pre":
      x = self.final_norm(x)
    return x, aux


class Model(nn.Module):
  """Encoder + the head named by `model.head`; returns (head output, aux)."""
  config: ModelConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.head = self.config.build("head")

  def __call__(self, inputs: Mapping[str, jax.Array], *, deterministic: bool = True):
    tokens = inputs["tokens"]
    mask = inputs.get("mask")
    hidden, aux = self.encoder(
        tokens, mask=mask, segment_ids=inputs.get("segment_ids"),
        positions=inputs.get("positions"), type_ids=inputs.get("type_ids"),
        deterministic=deterministic)
    out = self.head(hidden, mask=mask, embedding=self.encoder.embedding_table,
                    deterministic=deterministic)
    return out, aux
