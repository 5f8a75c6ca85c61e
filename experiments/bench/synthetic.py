"""The runner's own train step on synthetic batches, for the benchmarks that time whole steps.

`runner_step` builds exactly what `experiments/train.py` trains: `experiments.steps.
make_train_step` over the task's model with the runner's optimizer (`experiments.optim`: AdamW,
warmup, global-norm clipping), on one fixed random batch. Two tasks without data files:

- `SyntheticMLM`: every row gets exactly P = round(mask_rate * length) masked positions drawn
  from the step's RNG (80% [MASK], 10% a random token, 10% unchanged, as BERT), so every step
  does the same work. `predict="masked"` (the default of our MLM head): the head's transform
  and vocabulary projection run only at `inputs["predict_positions"]` [batch, P] (BERT's
  masked_lm_positions); `predict="all"` ("same work" as Hugging Face's BertForMaskedLM):
  full-vocabulary logits at every position, the loss weighted to the same P positions.
- `SyntheticClassify`: the classification task's own `prepare` and loss
  (experiments/tasks/classify.py) on random tokens and labels.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from encoders.config import ModelConfig
from experiments import optim, steps
from experiments.tasks.base import Task, weighted_cross_entropy
from experiments.tasks.classify import ClassifyTask

PREDICT = ("masked", "all")
MASK_ID, FIRST_REGULAR_ID = 4, 5  # special ids below FIRST_REGULAR_ID, as the byte tokenizer


class SyntheticMLM(Task):
  """MLM on fixed random tokens with exactly `num_predict` masked positions per row."""

  def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, num_predict: int,
               predict: str):
    if predict not in PREDICT:
      raise ValueError(f"predict={predict!r}; allowed: {', '.join(PREDICT)}")
    self.config, self.vocab_size = config, vocab_size  # no data: Task.__init__ is not used
    self.num_predict, self.predict = num_predict, predict

  def model_config(self, model: Mapping) -> ModelConfig:
    return ModelConfig.from_dict(model)

  def batch(self, batch_size: int, length: int, seed: int) -> dict:
    return {"tokens": jax.random.randint(jax.random.PRNGKey(seed), (batch_size, length),
                                         FIRST_REGULAR_ID, self.vocab_size)}

  def prepare(self, batch, rng, train):
    del train
    tokens = batch["tokens"]
    order_rng, kind_rng, random_rng = jax.random.split(rng, 3)
    order = jnp.argsort(jax.random.uniform(order_rng, tokens.shape), axis=1)
    positions = jnp.sort(order[:, :self.num_predict], axis=1)  # [batch, P], distinct
    labels = jnp.take_along_axis(tokens, positions, axis=1)
    u = jax.random.uniform(kind_rng, positions.shape)
    random_tokens = jax.random.randint(random_rng, positions.shape, FIRST_REGULAR_ID,
                                       self.vocab_size)
    replaced = jnp.where(u < 0.8, MASK_ID, jnp.where(u < 0.9, random_tokens, labels))
    rows = jnp.arange(tokens.shape[0])[:, None]
    corrupted = tokens.at[rows, positions].set(replaced.astype(tokens.dtype))
    inputs = {"tokens": corrupted, "mask": jnp.ones(tokens.shape, bool)}
    if self.predict == "masked":
      inputs["predict_positions"] = positions
      return inputs, {"labels": labels, "weights": jnp.ones(positions.shape, jnp.float32)}
    weights = jnp.zeros(tokens.shape, jnp.float32).at[rows, positions].set(1.0)
    return inputs, {"labels": tokens, "weights": weights}

  def metrics(self, outputs, targets):
    return weighted_cross_entropy(outputs, targets["labels"], targets["weights"])


class SyntheticClassify(ClassifyTask):
  """The classification task (its prepare and loss) on random tokens and labels."""

  def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, num_classes: int):
    self.config = config  # no data: ClassifyTask.__init__ is not used
    self.vocab_size, self.num_classes = vocab_size, num_classes

  def model_config(self, model: Mapping) -> ModelConfig:
    return ModelConfig.from_dict(model)

  def batch(self, batch_size: int, length: int, seed: int) -> dict:
    tokens_rng, labels_rng = jax.random.split(jax.random.PRNGKey(seed))
    return {"inputs": jax.random.randint(tokens_rng, (batch_size, length), 1, self.vocab_size),
            "labels": jax.random.randint(labels_rng, (batch_size,), 0, self.num_classes)}


def train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The runner's train fields the optimizer reads (AdamW as in configs/base.py)."""
  return ml_collections.ConfigDict(dict(
      learning_rate=1e-4, warmup_steps=10, num_steps=10_000, schedule="linear",
      end_lr_fraction=0.0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
      grad_clip_norm=config.grad_clip_norm))


def runner_step(config: ml_collections.ConfigDict, model: Mapping, task: Task,
                length: int) -> tuple:
  """(train step, (state, batch), parameter count): the runner's step of `task` on one batch of
  config.batch_size x `length` (the state first: the caller donates it)."""
  model = task.build_model(task.model_config(model))
  optimizer, schedule = optim.make_optimizer(train_config(config))
  batch = task.batch(config.batch_size, length, config.seed)
  example, _ = task.prepare(batch, jax.random.PRNGKey(0), train=True)
  state = jax.jit(lambda: steps.init_state(model, optimizer, example, config.seed))()
  state = state.replace(params=nn.unbox(state.params), opt_state=nn.unbox(state.opt_state))
  train_step = steps.make_train_step(model, task, optimizer, schedule, {})
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  return train_step, (state, batch), num_params
