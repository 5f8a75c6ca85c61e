"""Sparse upcycling: dense-model parameters -> MoE-model parameters (pure functions).

Sparse Upcycling (Komatsuzaki et al. 2023): every expert of an MoE block starts as a copy of
that block's dense FFN, the router is freshly initialised (normal, `model.init_std`), and all
other parameters (embeddings, attention, norms, head, the dense blocks of `every > 1`) are
copied. Drop-Upcycling (Nakamura et al. 2025): `drop_fraction` r re-initialises, in each
expert independently, a random r of the hidden units (their input columns, biases set to 0,
and output rows) from a normal with the mean and std of the dense matrix they replace, so
experts can diverge.

Right after upcycling (r = 0) the MoE model computes exactly the dense function whenever the
gates of each token sum to 1 and no assignment is dropped (`is_exact`). Gates: `topk` with
`order="topk_then_softmax"` or with `renormalize=True`, and `hash`; not `switch` (nor `topk`
without renormalisation: the gate is a probability below 1). Drops: none with
`dispatch="dropless"`; capacity dispatch drops nothing for every batch only when
top_k * factor >= E (then C = all real tokens), for both `capacity_factor` (training) and
`eval_capacity_factor`; below that, overflowing assignments lose their expert output.
`expert_choice` (a token gets 0..E experts) is exact only under that same condition: every
expert takes every token, and the gates are the whole softmax. With `num_shared_experts = m`
the shared FFN holds m copies of the dense hidden units and every output projection and bias is
split so that shared + routed outputs add up to the dense output (still exact). Fine-grained
experts (`expert_dim` != `mlp_dim`) cannot be copies and are refused.

Works on both parameter layouts of the Encoder: scanned (leading `layers` axis, groups of
`every` blocks) and unscanned (`blocks_0`, `blocks_1`, ...), in any combination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from encoders import patterns
from encoders.errors import ConfigError
from encoders.moe import placement

if TYPE_CHECKING:
  from encoders.config import ModelConfig


def is_exact(moe: ModelConfig) -> bool:
  """Whether the upcycled model (drop_fraction 0) computes the dense function exactly for every
  batch, in training and in evaluation: gates that sum to 1 and no dropped assignment."""
  layer = moe.build("ffn")
  every_token_fits = (layer.k * min(layer.capacity_factor, layer.eval_capacity_factor)
                      >= layer.num_experts)
  if layer.router == "expert_choice":
    return every_token_fits
  gates_sum_to_one = layer.router == "hash" or (layer.router == "topk" and (
      layer.order == "topk_then_softmax" or layer.renormalize))
  return gates_sum_to_one and (layer.dispatch == "dropless" or every_token_fits)


def _scanned(config: ModelConfig) -> bool:
  return config.scan_layers and config.variant_class("connection").reads != "all"


def split_layers(encoder: Mapping, config: ModelConfig) -> tuple[dict, list[dict]]:
  """Encoder params -> (everything but the blocks, one param dict per block)."""
  rest = {k: v for k, v in encoder.items() if k != "blocks" and not k.startswith("blocks_")}
  n = config.num_layers
  if not _scanned(config):
    return rest, [encoder[f"blocks_{i}"] for i in range(n)]
  k = patterns.period(config)
  if k == 1:
    return rest, [jax.tree.map(lambda a, i=i: a[i], encoder["blocks"]) for i in range(n)]
  return rest, [jax.tree.map(lambda a, i=i: a[i // k], encoder["blocks"][f"block_{i % k}"])
                for i in range(n)]


def join_layers(rest: Mapping, layers: list, config: ModelConfig) -> dict:
  """Inverse of `split_layers` for `config`'s layout."""
  out = dict(rest)
  if not _scanned(config):
    out.update({f"blocks_{i}": layer for i, layer in enumerate(layers)})
    return out
  k = patterns.period(config)
  stack = lambda group: jax.tree.map(lambda *a: jnp.stack(a), *group)  # noqa: E731
  if k == 1:
    out["blocks"] = stack(layers)
  else:
    out["blocks"] = {f"block_{r}": stack(layers[r::k]) for r in range(k)}
  return out


def _check(dense: ModelConfig, moe: ModelConfig) -> dict:
  spec = moe.spec("ffn")
  if spec["name"] != "moe":
    raise ConfigError(f"upcycling: the target model.ffn.name is {spec['name']!r}; allowed: moe")
  dense_ffn = dense.spec("ffn")
  expert, act = spec.get("expert", "mlp"), spec.get("activation", "gelu")
  if dense_ffn["name"] != expert or dense_ffn.get("activation", "gelu") != act:
    raise ConfigError(f"upcycling: model.ffn.expert={expert!r}, activation={act!r} must match "
                      f"the dense FFN ({dense_ffn['name']!r}, "
                      f"{dense_ffn.get('activation', 'gelu')!r})")
  if spec.get("expert_dim", 0) not in (0, dense.mlp_dim):
    raise ConfigError(f"upcycling: model.ffn.expert_dim={spec['expert_dim']} must be 0 or the "
                      f"dense model.mlp_dim={dense.mlp_dim} (experts are copies)")
  for field in ("dim", "num_layers", "mlp_dim", "num_heads", "vocab_size"):
    if getattr(dense, field) != getattr(moe, field):
      raise ConfigError(f"upcycling: model.{field}={getattr(moe, field)} differs from the dense "
                        f"checkpoint's {getattr(dense, field)}")
  return spec


def _drop(expert_ffn: dict, rng: jax.Array, fraction: float) -> dict:
  """Drop-Upcycling: re-initialise `fraction` of each expert's hidden units."""
  kernels = [name for name in expert_ffn if name != "wo"]
  num_experts, hidden = expert_ffn["wo"]["kernel"].shape[:2]
  count = int(round(fraction * hidden))
  out = jax.tree.map(lambda a: a, expert_ffn)
  for e in range(num_experts):
    rng, pick_rng, *init_rngs = jax.random.split(rng, 2 + len(kernels) + 1)
    units = jax.random.permutation(pick_rng, hidden)[:count]
    for name, init_rng in zip([*kernels, "wo"], init_rngs):
      w = expert_ffn[name]["kernel"][e]
      fresh = jnp.mean(w) + jnp.std(w) * jax.random.normal(init_rng, w.shape, w.dtype)
      if name == "wo":  # [hidden, dim]: rows
        w = w.at[units].set(fresh[units])
      else:  # [dim, hidden]: columns
        w = w.at[:, units].set(fresh[:, units])
        out[name]["bias"] = out[name]["bias"].at[e, units].set(0.0)
      out[name]["kernel"] = out[name]["kernel"].at[e].set(w)
  return out


def upcycle_ffn(ffn: Mapping, moe: ModelConfig, rng: jax.Array,
                drop_fraction: float = 0.0) -> dict:
  """One dense FFN's params -> the params of `moe`'s MoE FFN."""
  spec = moe.spec("ffn")
  num_experts = spec.get("num_experts", 8)
  shared = spec.get("num_shared_experts", 0)
  split = 1.0 / (shared + 1)  # routed experts and shared copies share the output
  experts = {name: {p: jnp.broadcast_to(v, (num_experts, *v.shape)) for p, v in sub.items()}
             for name, sub in ffn.items()}
  experts["wo"] = {p: v * split for p, v in experts["wo"].items()}
  router_rng, drop_rng = jax.random.split(rng)
  if drop_fraction:
    experts = _drop(experts, drop_rng, drop_fraction)
  out = dict(experts)
  if spec.get("router", "topk") != "hash":
    out["router"] = moe.init_std * jax.random.normal(
        router_rng, (moe.dim, num_experts), ffn["wo"]["kernel"].dtype)
  if shared:
    out["shared"] = {name: {p: jnp.concatenate([v] * shared, axis=-1) for p, v in sub.items()}
                     for name, sub in ffn.items() if name != "wo"}
    out["shared"]["wo"] = {"kernel": jnp.concatenate([ffn["wo"]["kernel"] * split] * shared),
                           "bias": ffn["wo"]["bias"] * (shared * split)}
  return out


def upcycle_encoder(encoder: Mapping, dense: ModelConfig, moe: ModelConfig, rng: jax.Array,
                    drop_fraction: float = 0.0) -> dict:
  """Dense Encoder params (layout of `dense`) -> MoE Encoder params (layout of `moe`)."""
  _check(dense, moe)
  if not 0.0 <= drop_fraction < 1.0:
    raise ConfigError(f"init_from.drop_fraction={drop_fraction!r} must be in [0, 1)")
  rest, layers = split_layers(encoder, dense)
  out = []
  for i, layer in enumerate(layers):
    layer = dict(layer)
    if placement.is_moe_layer(moe, i):
      layer["ffn"] = upcycle_ffn(layer["ffn"], moe, jax.random.fold_in(rng, i), drop_fraction)
    out.append(layer)
  return join_layers(rest, out, moe)


def encoder_path(params: Mapping) -> tuple[str, ...]:
  """Where the Encoder's params live: ("encoder",) or ("discriminator", "encoder") (ELECTRA)."""
  for path in (("encoder",), ("discriminator", "encoder")):
    node = params
    for key in path:
      node = node.get(key) if isinstance(node, Mapping) else None
    if node is not None:
      return path
  raise ConfigError("upcycling: no encoder parameters at params['encoder'] or "
                    "params['discriminator']['encoder']")


def upcycle(params: Mapping, dense: ModelConfig, moe: ModelConfig, rng: jax.Array,
            drop_fraction: float = 0.0) -> dict:
  """Whole-model params (encoder + head) -> the upcycled model's params (head copied)."""
  path = encoder_path(params)

  def rebuild(node, keys):
    node = dict(node)
    if len(keys) == 1:
      node[keys[0]] = upcycle_encoder(node[keys[0]], dense, moe, rng, drop_fraction)
    else:
      node[keys[0]] = rebuild(node[keys[0]], keys[1:])
    return node

  return rebuild(params, path)
