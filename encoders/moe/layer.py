"""The mixture-of-experts FFN (`model.ffn.name = "moe"`): router, dispatch, experts, aux.

Routers: encoders/moe/routers.py. Dispatch of token-choice routers (`topk`, `switch`, `hash`):

- `dropless` (MegaBlocks, Gale et al. 2022): the N*k (token, expert) assignments are sorted by
  expert and every one is computed; nothing is dropped and no [tokens x experts x capacity]
  tensor exists. The grouped matmul (`grouped_matmul`; all give the same results up to
  rounding):
  - `"blocked"` (CPU): each expert's rows are padded to a multiple of `block_size` and the
    blocks run as one batched matmul with each block's expert weights gathered (static shape:
    ceil(N*k / block) + E - 1 blocks);
  - `"ragged"`: `jax.lax.ragged_dot` on the sorted rows. XLA (jax 0.10) lowers it to one dense
    product against all E experts' weights stacked, zero where a row's expert is not, on CPU
    and GPU alike: E times the work and memory (compiled for an H100: a [rows, E * dim] operand,
    3.4x blocked's temporaries at E = 8; tests/test_aot.py), so `auto` never takes it;
  - `"megablox"` (TPU): the Pallas TPU kernels of JAX's `megablox` (`gmm` forward, `tgmm` for
    the weight gradient; MegaBlocks' grouped GEMM ported to TPU). The sorted rows are padded to
    a multiple of the row tile (`block_size`, or all rows when fewer) and the padding rows
    join the last group, so the kernel writes every output row. Compiled for TPU it needs
    float32 or bfloat16 and `dim`, the expert width and `block_size` multiples of 128
    (Mosaic blocks span 128 columns); `interpret=True` runs it in Pallas interpret mode on any
    backend (tests). A Pallas kernel has no GSPMD partitioning rule, so under an expert mesh
    megablox is not expert-parallel (MaxText wraps it in shard_map; not done here).
  - `"auto"` (default): megablox on a single TPU where its shapes fit, else blocked.
- `capacity` (GShard, Lepikhin et al. 2020; Switch Transformer): every expert has
  C = ceil(k * N * capacity_factor / E) slots (`eval_capacity_factor` when deterministic),
  N = the number of real (unmasked) tokens in the batch, so padding adds no slots and a padded
  batch drops what the same tokens unpadded would; assignments are served in priority order
  (all tokens' first choice, then second choice, each in token order) and those beyond C are
  dropped (their gate contribution is zero; the residual carries the token). Dispatch and
  combine are index gathers into an [E, C_max, dim] buffer rather than one-hot einsums (same
  result, no [N, E, C] tensor); C_max is the static capacity of all N + padding tokens, and the
  slots beyond C stay empty.
`expert_choice` always dispatches by capacity (that is its definition), with C computed the
same way (so `top_k * capacity_factor` is the paper's capacity factor c): each expert keeps
its C best real tokens.

Experts are `mlp` or `glu` FFNs (encoders/ffn.py) of width `expert_dim` (0 = model.mlp_dim;
smaller = fine-grained experts, Krajewski et al. 2024, "Scaling Laws for Fine-Grained MoE");
`num_shared_experts` adds an always-on FFN of num_shared_experts * expert_dim hidden units
(DeepSeekMoE, Dai et al. 2024). Each expert's parameters are that FFN's with a leading
`experts` axis (logical axis `experts` -> mesh axis `expert`), so upcycling is a broadcast.

Expert parallelism: GSPMD. The [E, C, dim] dispatch buffer and the expert hidden activations
are constrained to be split over the `experts` logical axis; with a mesh `expert` axis > 1 XLA
moves tokens to the devices holding their experts and back. (The dropless path gathers per-block
weights, so under an expert mesh it is correct but gathers the expert weights.)

Aux (summed over layers by the Encoder): `load_balance_loss` (Switch: E * sum_e f_e P_e, 1 when
balanced; topk/switch only), `router_z_loss` (ST-MoE, Zoph et al. 2022; all learned routers);
metrics, each divided by the model's number of MoE blocks so that the sum over layers is the
mean per MoE block: `expert_load` ([E] fraction of assignments per expert), `dropped_fraction`
(of real-token assignments; for expert choice, of real tokens no expert picked),
`router_entropy` (nats; learned routers).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.megablox import gmm

from encoders import sharding, target
from encoders.errors import ConfigError
from encoders.ffn import ACTIVATIONS, GLU, MLP, activation
from encoders.moe import placement, routers
from encoders.registry import register

if TYPE_CHECKING:
  from encoders.config import ModelConfig

DISPATCHES = ("dropless", "capacity")
EXPERTS = {"mlp": MLP, "glu": GLU}
GROUPED_MATMULS = ("auto", "blocked", "ragged", "megablox")
MEGABLOX_TILE = 128  # megablox's column tile (k and n); TPU blocks span multiples of 128 lanes
AUX_LOSSES = ("load_balance_loss", "router_z_loss")  # aux `*_loss` entries (aux_loss_weights)
AUX_METRICS = ("router_entropy", "expert_load", "dropped_fraction")
EXPERT_BUFFER = ("experts", None, "act_embed")
EXPERT_HIDDEN = ("experts", None, "act_mlp")


class ExpertDense(nn.Module):
  """E independent Dense layers: kernel [E, in, out], bias [E, out]."""
  num_experts: int
  features: int
  axes: tuple[str, str]
  config: ModelConfig

  @nn.compact
  def __call__(self, matmul, h):
    c = self.config
    kernel = self.param("kernel", sharding.param(nn.initializers.normal(c.init_std),
                                                 ("experts", *self.axes)),
                        (self.num_experts, h.shape[-1], self.features), c.params_dtype)
    bias = self.param("bias", sharding.param(nn.initializers.zeros, ("experts", self.axes[1])),
                      (self.num_experts, self.features), c.params_dtype)
    return matmul(h, kernel.astype(c.compute_dtype), bias.astype(c.compute_dtype),
                  self.axes[1] == "mlp")


@register("ffn", "moe")
class MoE(nn.Module):
  """Mixture-of-experts FFN; see the module docstring and README for every option."""
  aux_losses = AUX_LOSSES  # what it asks of the runner (encoders/needs.py)
  aux_metrics = AUX_METRICS
  config: ModelConfig
  num_experts: int = 8
  top_k: int = 0  # 0 = the router's default: 2 (topk, expert_choice), 1 (switch, hash)
  router: str = "topk"  # topk | switch | expert_choice | hash
  order: str = "softmax_then_topk"  # topk: softmax_then_topk | topk_then_softmax
  renormalize: bool = True  # softmax_then_topk: gates of the k experts sum to 1
  dispatch: str = "dropless"  # token choice: dropless | capacity
  capacity_factor: float = 1.25  # capacity dispatch / expert choice, training
  eval_capacity_factor: float = 2.0  # ... when deterministic (evaluation)
  expert: str = "mlp"  # mlp | glu
  activation: str = "gelu"  # gelu | gelu_tanh | relu | silu
  expert_dim: int = 0  # expert hidden width; 0 = model.mlp_dim
  num_shared_experts: int = 0  # always-on experts (DeepSeekMoE)
  every: int = 1  # MoE in every k-th block, dense FFN of the expert type in the others
  router_jitter: float = 0.0  # training: router input * U(1 - j, 1 + j) (Switch)
  router_noise: float = 0.0  # training: + N(0, noise^2) on router logits (Shazeer et al.)
  grouped_matmul: str = "auto"  # dropless: auto | blocked | ragged | megablox (see above)
  block_size: int = 128  # dropless blocked: rows per block; megablox: the row tile
  interpret: bool = False  # run Pallas kernels (megablox) in interpret mode, for CPU tests
  reads_tokens = True  # Block passes token_ids and mask (hash routing, padding)

  def __post_init__(self):
    self.check()
    super().__post_init__()

  def check(self) -> None:
    """One-line ConfigErrors for bad options, before anything is traced."""
    def choose(field, allowed):
      if getattr(self, field) not in allowed:
        raise ConfigError(f"model.ffn.{field}={getattr(self, field)!r}; "
                          f"allowed: {', '.join(allowed)}")
    choose("router", routers.ROUTERS)
    choose("order", routers.ORDERS)
    choose("dispatch", DISPATCHES)
    choose("expert", tuple(EXPERTS))
    choose("activation", tuple(ACTIVATIONS))
    choose("grouped_matmul", GROUPED_MATMULS)
    for field, low in (("num_experts", 1), ("top_k", 0), ("expert_dim", 0),
                       ("num_shared_experts", 0), ("block_size", 1)):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"model.ffn.{field}={value!r} must be an integer >= {low}")
    for field in ("capacity_factor", "eval_capacity_factor"):
      if not getattr(self, field) > 0:
        raise ConfigError(f"model.ffn.{field}={getattr(self, field)!r} must be > 0")
    if not 0.0 <= self.router_jitter < 1.0:
      raise ConfigError(f"model.ffn.router_jitter={self.router_jitter!r} must be in [0, 1)")
    if not self.router_noise >= 0.0:
      raise ConfigError(f"model.ffn.router_noise={self.router_noise!r} must be >= 0")
    if self.router in ("switch", "hash") and self.top_k not in (0, 1):
      raise ConfigError(f"model.ffn.top_k={self.top_k} with router={self.router!r}; "
                        "allowed: 0 or 1 (one expert per token)")
    if self.k > self.num_experts:
      raise ConfigError(f"model.ffn.top_k={self.k} must be <= model.ffn.num_experts="
                        f"{self.num_experts}")
    if self.grouped_matmul == "megablox":
      if not self.interpret and target.platform() != "tpu":
        raise ConfigError(f"model.ffn.grouped_matmul='megablox' needs a TPU (or model.ffn."
                          f"interpret=True); allowed on {target.platform()}: auto, blocked, "
                          "ragged")
      if misfit := self.megablox_misfit():
        raise ConfigError(f"model.ffn.grouped_matmul='megablox': {misfit}")
    placement.every(self.config)  # divisibility of num_layers

  @property
  def k(self) -> int:
    return self.top_k or (1 if self.router in ("switch", "hash") else 2)

  @property
  def hidden_dim(self) -> int:
    return self.expert_dim or self.config.mlp_dim

  def megablox_misfit(self) -> str:
    """Why megablox cannot run this layer ('' when it can): the kernel takes float32 or
    bfloat16; compiled (not interpreted) its blocks span multiples of MEGABLOX_TILE columns,
    and it runs on one device (XLA cannot partition a Mosaic call over a mesh, and the dropless
    rows are sorted over the whole batch)."""
    c = self.config
    devices = jax.sharding.get_abstract_mesh().size
    if not self.interpret and devices > 1:
      return f"it is not partitioned: the mesh has {devices} devices"
    if c.dtype not in ("float32", "bfloat16"):
      return f"model.dtype={c.dtype!r}; allowed: float32, bfloat16"
    if not self.interpret:
      width = "model.ffn.expert_dim" if self.expert_dim else "model.mlp_dim"
      for field, value in (("model.dim", c.dim), (width, self.hidden_dim),
                           ("model.ffn.block_size", self.block_size)):
        if value % MEGABLOX_TILE:
          return f"{field}={value} must be a multiple of {MEGABLOX_TILE}"
    return ""

  @property
  def resolved_matmul(self) -> str:
    """The dropless grouped matmul this layer runs: `grouped_matmul` with `auto` resolved by
    the platform compiled for (encoders/target.py): megablox on TPU where it fits, else
    blocked (ragged_dot lowers to an E-times dense product: see the module docstring)."""
    if self.grouped_matmul != "auto":
      chosen, reason = self.grouped_matmul, ""
    elif target.platform() == "tpu":
      reason = self.megablox_misfit()
      chosen = "blocked" if reason else "megablox"
    else:
      chosen, reason = "blocked", ""
    target.note("moe", self, self.grouped_matmul, chosen, reason)
    return chosen

  # --- Experts --------------------------------------------------------------------------------

  def experts(self, h: jax.Array, matmul, deterministic: bool) -> jax.Array:
    """The expert FFNs on rows `h`; `matmul(h, kernel [E, i, o], bias [E, o], to_hidden)` says
    which expert each row uses (the layout of the dispatch path)."""
    c, e, f = self.config, self.num_experts, self.hidden_dim

    def dense(features, axes, name):
      return ExpertDense(e, features, axes, c, name=name)

    act = activation(self.activation)
    if self.expert == "glu":
      hidden = (act(dense(f, ("embed", "mlp"), "wi_gate")(matmul, h)) *
                dense(f, ("embed", "mlp"), "wi_up")(matmul, h))
    else:
      hidden = act(dense(f, ("embed", "mlp"), "wi")(matmul, h))
    hidden = nn.Dropout(c.dropout_rate)(hidden, deterministic=deterministic)
    return dense(c.dim, ("mlp", "embed"), "wo")(matmul, hidden)

  def capacity_experts(self, xe: jax.Array, deterministic: bool) -> jax.Array:
    """[E, C, dim] -> [E, C, dim], split over the `experts` axis."""
    def matmul(h, kernel, bias, to_hidden):
      out = jnp.einsum("eci,eio->eco", h, kernel) + bias[:, None, :]
      return sharding.constrain(out, EXPERT_HIDDEN if to_hidden else EXPERT_BUFFER)
    return self.experts(sharding.constrain(xe, EXPERT_BUFFER), matmul, deterministic)

  def grouped_experts(self, rows: jax.Array, row_expert: jax.Array, sizes: jax.Array,
                      deterministic: bool) -> jax.Array:
    """Rows sorted by expert ([S, dim], expert ids, group sizes [E]) -> expert outputs."""
    s, e = rows.shape[0], self.num_experts
    grouped_matmul = self.resolved_matmul
    if grouped_matmul == "ragged":
      def ragged(h, kernel, bias, _):
        return jax.lax.ragged_dot(h, kernel, sizes) + bias[row_expert]
      return self.experts(rows, ragged, deterministic)
    if grouped_matmul == "megablox":
      tile = min(self.block_size, -(-s // 8) * 8)
      pad = -s % tile  # padding rows: zeros in the last group, cut from the output
      padded_expert = jnp.concatenate([row_expert, jnp.full((pad,), e - 1, row_expert.dtype)])
      group_sizes = sizes.at[-1].add(pad)

      def megablox(h, kernel, bias, _):
        cols = math.gcd(h.shape[1], kernel.shape[2], MEGABLOX_TILE)  # tiles dividing k and n
        out = gmm(h, kernel, group_sizes, preferred_element_type=jnp.result_type(h, kernel),
                  tiling=(tile, cols, cols), interpret=self.interpret)
        return out + bias[padded_expert]
      return self.experts(jnp.pad(rows, ((0, pad), (0, 0))), megablox, deterministic)[:s]
    block = min(self.block_size, -(-s // (8 * e)) * 8)  # small inputs: ~ceil(S / E) rows
    num_blocks = -(-s // block) + e - 1  # >= sum_e ceil(size_e / block)
    padded = -(-sizes // block) * block
    padded_end = jnp.cumsum(padded)
    group_start = jnp.cumsum(sizes) - sizes
    slot = padded_end[row_expert] - padded[row_expert] + jnp.arange(s) - group_start[row_expert]
    blocks = jnp.zeros((num_blocks * block, rows.shape[1]), rows.dtype).at[slot].set(
        rows, unique_indices=True).reshape(num_blocks, block, -1)
    block_expert = jnp.minimum(
        jnp.searchsorted(padded_end, jnp.arange(num_blocks) * block, side="right"), e - 1)

    def blocked(h, kernel, bias, _):
      return (jnp.einsum("nbi,nio->nbo", h, kernel[block_expert]) +
              bias[block_expert][:, None, :])
    out = self.experts(blocks, blocked, deterministic)
    return out.reshape(num_blocks * block, -1)[slot]

  # --- Routing and dispatch -------------------------------------------------------------------

  def router_logits(self, x: jax.Array, deterministic: bool) -> jax.Array:
    c = self.config
    kernel = self.param("router", sharding.param(nn.initializers.normal(c.init_std),
                                                 ("embed", None)),
                        (c.dim, self.num_experts), c.params_dtype).astype(jnp.float32)
    x = x.astype(jnp.float32)
    if self.router_jitter and not deterministic:
      x = x * jax.random.uniform(self.make_rng("dropout"), x.shape, jnp.float32,
                                 1.0 - self.router_jitter, 1.0 + self.router_jitter)
    logits = x @ kernel
    if self.router_noise and not deterministic:
      logits = logits + self.router_noise * jax.random.normal(self.make_rng("dropout"),
                                                              logits.shape)
    return logits

  def token_choice(self, x, expert, gate, real, deterministic: bool):
    """Dispatch of [N, k] assignments -> (y [N, dim], kept [N, k] bool)."""
    n, d = x.shape
    k, e = expert.shape[1], self.num_experts
    # Slot-major order: every token's first choice, then every token's second choice, ...
    slot_expert, slot_gate = expert.T.reshape(-1), gate.T.reshape(-1)
    slot_token = jnp.tile(jnp.arange(n), k)
    if self.dispatch == "dropless":
      order = jnp.argsort(slot_expert, stable=True)
      sizes = jnp.bincount(slot_expert, length=e).astype(jnp.int32)
      out = self.grouped_experts(x[slot_token[order]], slot_expert[order], sizes, deterministic)
      y_slot = jnp.zeros_like(out).at[order].set(out, unique_indices=True)
      kept = jnp.ones_like(expert, bool)
    else:
      factor = self.eval_capacity_factor if deterministic else self.capacity_factor
      cap = routers.capacity(n, k, factor, e)  # buffer slots; real tokens get `limit`
      limit = routers.real_capacity(jnp.sum(real), n, k, factor, e)
      routed = jnp.tile(real, k)
      onehot = jax.nn.one_hot(slot_expert, e, dtype=jnp.int32) * routed[:, None]
      position = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=1)
      keep = routed & (position < limit)
      dest = jnp.where(keep, slot_expert * cap + position, e * cap)  # e * cap: dropped
      source = jnp.full((e * cap + 1,), n, jnp.int32).at[dest].set(slot_token)[:-1]
      xe = jnp.concatenate([x, jnp.zeros((1, d), x.dtype)])[source].reshape(e, cap, d)
      ye = self.capacity_experts(xe, deterministic).reshape(e * cap, d)
      y_slot = jnp.concatenate([ye, jnp.zeros((1, d), ye.dtype)])[dest]
      slot_gate = slot_gate * keep
      kept = keep.reshape(k, n).T
    y = (y_slot * slot_gate[:, None].astype(y_slot.dtype)).reshape(k, n, d).sum(0)
    return y, kept

  def expert_choice(self, x, logits, real, deterministic: bool):
    """-> (y [N, dim], number of experts that took each token [N])."""
    n, d = x.shape
    factor = self.eval_capacity_factor if deterministic else self.capacity_factor
    cap = routers.capacity(n, self.k, factor, self.num_experts)
    token, gate = routers.expert_choice(logits, cap, real)  # ranked best first
    limit = routers.real_capacity(jnp.sum(real), n, self.k, factor, self.num_experts)
    gate = gate * (jnp.arange(cap) < limit)
    ye = self.capacity_experts(x[token], deterministic) * gate[..., None].astype(x.dtype)
    y = jnp.zeros((n, d), ye.dtype).at[token.reshape(-1)].add(ye.reshape(-1, d))
    taken = jnp.zeros((n,), jnp.int32).at[token.reshape(-1)].add((gate > 0).reshape(-1))
    return y, taken, token, gate

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True,
               token_ids: jax.Array | None = None, mask: jax.Array | None = None):
    c, e = self.config, self.num_experts
    shape = x.shape
    xf = x.reshape(-1, shape[-1])
    n = xf.shape[0]
    real = jnp.ones((n,), bool) if mask is None else mask.reshape(-1).astype(bool)
    realf = real.astype(jnp.float32)
    aux = {}
    if self.router == "hash":
      if token_ids is None:
        raise ConfigError("model.ffn.router='hash' needs token ids (call the MoE layer with "
                          "token_ids=..., as the Encoder does)")
      expert = routers.hash_experts(token_ids.reshape(-1), e)[:, None]
      y, kept = self.token_choice(xf, expert, realf[:, None], real, deterministic)
      assigned = real[:, None]
    else:
      logits = self.router_logits(xf, deterministic)
      probs = jax.nn.softmax(logits, axis=-1)
      aux["router_z_loss"] = routers.z_loss(logits, realf)
      aux["router_entropy"] = routers.entropy(probs, realf)
      if self.router == "expert_choice":
        y, taken, token, gate = self.expert_choice(xf, logits, real, deterministic)
        expert = jnp.broadcast_to(jnp.arange(e)[:, None], token.shape)
        assigned = gate > 0
        dropped = jnp.sum((taken == 0) & real) / jnp.maximum(jnp.sum(real), 1)
      else:
        switch = self.router == "switch"
        expert, gate = routers.token_choice(
            logits, self.k, "softmax_then_topk" if switch else self.order,
            self.renormalize and not switch, realf)
        y, kept = self.token_choice(xf, expert, gate, real, deterministic)
        assigned = jnp.broadcast_to(real[:, None], expert.shape)
        aux["load_balance_loss"] = routers.load_balance_loss(probs, expert, assigned, realf)
    if self.router != "expert_choice":
      dropped = jnp.sum(assigned & ~kept) / jnp.maximum(jnp.sum(assigned), 1)
    aux["expert_load"] = routers.expert_fractions(expert, assigned, e)
    aux["dropped_fraction"] = dropped.astype(jnp.float32)
    per_block = 1.0 / max(1, placement.num_moe_layers(c))
    aux = {name: value if name.endswith("_loss") else value * per_block
           for name, value in aux.items()}
    if self.num_shared_experts:
      shared = EXPERTS[self.expert](c.replace(mlp_dim=self.num_shared_experts * self.hidden_dim),
                                    activation=self.activation, name="shared")
      y = y + shared(xf, deterministic=deterministic)[0]
    return y.astype(x.dtype).reshape(shape), aux
