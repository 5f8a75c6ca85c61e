"""The Encoder: embeddings -> blocks (joined by a connection) -> final norm, and a Model that
puts a head on it.

Every choice comes from `ModelConfig`; each variant kind is looked up in the registry, so
swapping `model.attention.name` (or ffn, norm, position, connection, head) changes nothing else.
With `scan_layers` and a connection whose blocks read only the latest output (residual, hyper,
scalar_mix), identical blocks run under `nn.scan`, so a deep model compiles as fast as one
block; parameters then carry a leading `layers` axis. A layer pattern (`model.layer_pattern`,
encoders/patterns.py; MoE every k-th block is one) makes the scanned unit its group of blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from encoders import initializers, patterns, sharding

if TYPE_CHECKING:
  from encoders.config import ModelConfig


class Block(nn.Module):
  """One transformer block: attention and FFN sub-layers, each joined to the stream.

  `model.norm_position`: `pre`: x + f(norm(x)) (Xiong et al. 2020); `post`: norm(x + f(x))
  (original BERT); `sandwich`: x + norm'(f(norm(x))), an extra norm on each sub-layer output
  before the add (Sandwich-LN, Ding et al. 2021, "CogView"). With `model.skip_first_prenorm`
  (ModernBERT's, Warner et al. 2024) layer 0's attention reads its input unnormed (the
  embeddings were normed already); its attention norm's parameters still exist, unused, so
  scanned and unrolled stacks keep one layout (`layer` may be a traced scan index). The
  attention output is dropped at `model.attention_output_dropout_rate`. A connection with
  `wraps_sublayers` (hyper-connections) replaces the add with its own `join` on n streams.
  Returns (x, aux), aux holding the FFN's auxiliary losses and metrics; with `emit`,
  (x, (aux, x)) so that nn.scan also stacks the block outputs. An FFN class with
  `reads_tokens = True` (MoE hash routing) also gets `token_ids` and the padding `mask`.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x, mask, segment_ids, positions, deterministic: bool, layer=0,
               emit: bool = False, tokens=None):
    c = self.config
    attention = c.build("attention", name="attention")
    ffn = c.build("ffn", name="ffn")
    token_info = (dict(token_ids=tokens, mask=mask)
                  if getattr(c.variant_class("ffn"), "reads_tokens", False) else {})
    dropout = {"ffn": nn.Dropout(c.dropout_rate)}  # one module (one RNG stream) for both,
    dropout["attention"] = (dropout["ffn"] if c.attention_output_dropout_rate is None  # unless
                            else nn.Dropout(c.attention_output_dropout_rate,  # set apart
                                            name="attention_output_dropout"))

    def attend(h):
      return attention(h, mask=mask, segment_ids=segment_ids, positions=positions,
                       deterministic=deterministic), {}

    def feed_forward(h):
      return ffn(h, deterministic=deterministic, **token_info)

    def join(x, sublayer, name: str, index):
      norm = c.build("norm", name=f"{name}_norm")
      drop = dropout[name]
      if c.norm_position == "post":
        y, aux = sublayer(x)
        return norm(x + drop(y, deterministic=deterministic)), aux
      out_norm = c.build("norm", name=f"{name}_out_norm") if c.norm_position == "sandwich" else None

      def prenorm(h):
        if c.skip_first_prenorm and name == "attention":
          return jnp.where(jnp.asarray(layer) == 0, h.astype(c.compute_dtype), norm(h))
        return norm(h)

      def branch(h):
        y, aux = sublayer(prenorm(h))
        if out_norm is not None:
          y = out_norm(y)
        return drop(y, deterministic=deterministic), aux

      if c.variant_class("connection").wraps_sublayers:
        return c.build("connection", name=f"{name}_connection").join(x, branch, index)
      y, aux = branch(x)
      return sharding.constrain(x + y, sharding.HIDDEN), aux

    x, _ = join(x, attend, "attention", 2 * layer)
    x, aux = join(x, feed_forward, "ffn", 2 * layer + 1)
    return (x, (aux, x)) if emit else (x, aux)


def sum_aux(auxes):
  """Entry-wise sum of aux dicts that may hold different names (dense and MoE blocks)."""
  total = {}
  for aux in auxes:
    for name, value in aux.items():
      total[name] = total[name] + value if name in total else value
  return total


class BlockGroup(nn.Module):
  """One period of the layer pattern (encoders/patterns.py; e.g. `model.ffn.every = k`: k - 1
  dense-FFN blocks, then the MoE block): k consecutive blocks as the unit that the Encoder
  scans num_layers / k times. Same call as Block; with `emit`, the k block outputs are stacked
  on a leading axis."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, mask, segment_ids, positions, deterministic: bool, layer=0,
               emit: bool = False, tokens=None):
    k = patterns.period(self.config)
    auxes, outputs = [], []
    for r in range(k):
      block = Block(patterns.layer_config(self.config, r), name=f"block_{r}")
      x, aux = block(x, mask, segment_ids, positions, deterministic, layer * k + r, False, tokens)
      auxes.append(aux)
      outputs.append(x)
    aux = sum_aux(auxes)
    return (x, (aux, jnp.stack(outputs))) if emit else (x, aux)


def rematerialized(block: type[nn.Module], policy: str, scanned: bool) -> type[nn.Module]:
  """`block` under `model.remat` (jax.checkpoint; Chen et al. 2016, "Training Deep Nets with
  Sublinear Memory Cost"): `full` keeps only each block's input for the backward pass and
  recomputes the rest, `dots_saveable` also keeps matmul outputs (recomputes only elementwise
  ops), `none` keeps everything. `deterministic` and `emit` are static."""
  if policy == "none":
    return block
  saveable = None if policy == "full" else jax.checkpoint_policies.dots_saveable
  # Under nn.scan the loop already stops XLA from merging recomputation into the forward pass.
  return nn.remat(block, policy=saveable, prevent_cse=not scanned, static_argnums=(5, 7))


class Encoder(nn.Module):
  """Token (+ type, + absolute position) embeddings, `num_layers` blocks joined by the
  connection (encoders/connections.py), final norm (pre and sandwich norm). Embeddings of
  another width (`model.embed_dim`, ELECTRA's small models, Clark et al. 2020) are projected to
  `dim` after their norm and dropout (`embed_project`, with a bias).

  Call: `encoder(tokens, mask=None, segment_ids=None, positions=None, type_ids=None,
  deterministic=True, return_all_layers=False, token_embedding=None) -> (hidden [batch, length,
  dim], aux)`; `token_embedding` replaces the own token table (never created then); aux
  sums each block's FFN aux. With `return_all_layers`, a third value: the embedding output and
  every block's output, [num_layers + 1, batch, length, dim], before the final norm (hyper
  streams summed), for heads that read several layers; collected only when asked for (as
  scan outputs when the blocks are scanned).
  """
  config: ModelConfig

  def setup(self):
    c = self.config
    self.token_embed = nn.Embed(
        c.vocab_size, c.embed_width, dtype=c.compute_dtype, param_dtype=c.params_dtype,
        embedding_init=sharding.param(initializers.weight(c, "embedding"), ("vocab", "embed")))
    if c.type_vocab_size:
      self.type_embed = nn.Embed(
          c.type_vocab_size, c.embed_width, dtype=c.compute_dtype, param_dtype=c.params_dtype,
          embedding_init=sharding.param(initializers.weight(c, "embedding"), ("vocab", "embed")))
    if c.variant_class("position").where == "embeddings":
      self.position = c.build("position")
    if c.embed_norm:
      self.embed_norm = c.build("norm")
    self.dropout = nn.Dropout(c.dropout_rate)
    if c.embed_width != c.dim:
      self.embed_project = nn.Dense(
          c.dim, dtype=c.compute_dtype, param_dtype=c.params_dtype,
          kernel_init=sharding.param(initializers.weight(c), ("embed", "mlp")),
          bias_init=sharding.param(nn.initializers.zeros, ("mlp",)))
    # A layer pattern of period k > 1 (e.g. MoE every k-th block) scans groups of k blocks.
    k = patterns.period(c)
    unit = BlockGroup if self.scanned and k > 1 else Block
    block = rematerialized(unit, c.remat, scanned=self.scanned)
    if self.scanned:
      self.blocks = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * 4 + (0, nn.broadcast, nn.broadcast),
          length=c.num_layers // k,
          metadata_params={nn.PARTITION_NAME: "layers"})(c if k > 1 else
                                                         patterns.layer_config(c, 0))
    else:
      self.blocks = [block(patterns.layer_config(c, i)) for i in range(c.num_layers)]
    # connections[i] builds block i's input from i + 1 history entries; scanned blocks have
    # only the first (the others pass the stream through). The output connection reads all.
    inputs = 1 if self.scanned else c.num_layers
    self.connections = [c.build("connection", depth=i + 1) for i in range(inputs)]
    self.output_connection = c.build("connection", depth=c.num_layers + 1)
    if c.norm_position != "post":
      self.final_norm = c.build("norm")

  @property
  def scanned(self) -> bool:
    return self.config.scan_layers and self.config.variant_class("connection").reads != "all"

  @property
  def embedding_table(self) -> jax.Array:
    return self.token_embed.embedding

  def __call__(self, tokens: jax.Array, *, mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               type_ids: jax.Array | None = None, deterministic: bool = True,
               return_all_layers: bool = False, token_embedding: jax.Array | None = None):
    c = self.config
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if token_embedding is None:
      x = self.token_embed(tokens)
    else:  # a table [vocab, dim] owned elsewhere (ELECTRA's generator shares the discriminator's)
      x = jnp.take(token_embedding, tokens, axis=0).astype(c.compute_dtype)
    if c.type_vocab_size:
      x = x + self.type_embed(jnp.zeros_like(tokens) if type_ids is None else type_ids)
    if c.variant_class("position").where == "embeddings":
      x = self.position(x, positions)
    if c.embed_norm:
      x = self.embed_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    if c.embed_width != c.dim:
      x = self.embed_project(x)
    x = sharding.constrain(x.astype(c.compute_dtype), sharding.HIDDEN)

    keep_all = return_all_layers or c.variant_class("connection").reads != "last"
    if self.scanned:
      k = patterns.period(c)
      h, per_layer = self.blocks(self.connections[0]([x]), mask, segment_ids, positions,
                                 deterministic, jnp.arange(c.num_layers // k), keep_all, tokens)
      aux, outputs = per_layer if keep_all else (per_layer, None)
      aux = jax.tree.map(lambda a: a.sum(0), aux)
      if keep_all and k > 1:  # [groups, k, ...] -> [layers, ...]
        outputs = outputs.reshape(-1, *outputs.shape[2:])
      history = [x, *outputs] if keep_all else [h]
    else:
      history, auxes = [x], []
      for i, (block, connection) in enumerate(zip(self.blocks, self.connections)):
        y, block_aux = block(connection(history), mask, segment_ids, positions, deterministic, i,
                             False, tokens)
        history = history + [y] if keep_all else [y]
        auxes.append(block_aux)
      aux = sum_aux(auxes)
    out = self.output_connection(history)
    if c.norm_position != "post":
      out = self.final_norm(out)
    if not return_all_layers:
      return out, aux
    layers = [x] + [self.output_connection.readout(y) for y in history[1:]]
    return out, aux, jnp.stack(layers)


class Model(nn.Module):
  """Encoder + the head named by `model.head`; returns (head output, aux).

  `inputs`: `tokens` [batch, length] and optionally `mask`, `segment_ids`, `positions`,
  `type_ids`; the whole dict also reaches the head (e.g. `predict_positions` for the MLM head).
  """
  config: ModelConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.head = self.config.build("head")

  def __call__(self, inputs: Mapping[str, jax.Array], *, deterministic: bool = True):
    reads_all = self.config.variant_class("head").reads_all_layers
    hidden, aux, *all_layers = self.encoder(
        inputs["tokens"], mask=inputs.get("mask"), segment_ids=inputs.get("segment_ids"),
        positions=inputs.get("positions"), type_ids=inputs.get("type_ids"),
        deterministic=deterministic, return_all_layers=reads_all)
    out = self.head(hidden, inputs=inputs, embedding=self.encoder.embedding_table,
                    all_layers=all_layers[0] if reads_all else None,
                    deterministic=deterministic)
    return out, aux
