"""Command-line overrides of variant options the config file leaves out, their types and
errors, and the resolved config.json (every option of every variant, defaults included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import listops_short
from encoders.config import resolve_model
from encoders.errors import ConfigError
from experiments import overrides, workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def overridden(*flags: str):
  """listops_short (dense, mlp, residual) with `flags` applied as experiments.main does."""
  config = listops_short.get_config()
  rest, taken = overrides.split(["main", *flags])
  assert rest == ["main"]
  overrides.apply(config, taken)
  return config


def one_line(error: pytest.ExceptionInfo) -> str:
  assert "\n" not in str(error.value)
  return str(error.value)


def test_split_takes_only_variant_options_and_aux_weights():
  argv = ["main", "--config", "c.py", "--config.model.attention.window=2",
          "--config.train.num_steps=2", "--config.model.dim=8",
          "--config.train.aux_loss_weights.router_z_loss=0.1"]
  rest, taken = overrides.split(argv)
  assert rest == ["main", "--config", "c.py", "--config.train.num_steps=2",
                  "--config.model.dim=8"]
  assert taken == [("model.attention.window", "2"),
                   ("train.aux_loss_weights.router_z_loss", "0.1")]


def test_options_absent_from_the_file_for_three_kinds():
  # The option comes before the name on purpose: names are applied first.
  config = overridden("--config.model.attention.block_size=32",
                      "--config.model.attention.name=local",
                      "--config.model.ffn.name=moe", "--config.model.ffn.num_experts=4",
                      "--config.model.connection.name=denseformer",
                      "--config.model.connection.dilation=2")
  assert config.model.attention.to_dict() == {"name": "local", "block_size": 32}
  assert config.model.ffn.to_dict() == {"name": "moe", "activation": "gelu", "num_experts": 4}
  assert config.model.connection.to_dict() == {"name": "denseformer", "dilation": 2}
  assert type(config.model.attention.block_size) is int  # pylint: disable=unidiomatic-typecheck


@pytest.mark.parametrize("flag, field, expected", [
    ("--config.model.norm.epsilon=1e-5", "norm.epsilon", 1e-5),
    ("--config.model.ffn.capacity_factor=2", "ffn.capacity_factor", 2.0),
    ("--config.model.ffn.renormalize=false", "ffn.renormalize", False),
    ("--config.model.head.pooler=True", "head.pooler", True),
    ("--config.model.head.pooling=mean", "head.pooling", "mean"),
    ("--config.model.head.num_classes=7", "head.num_classes", 7),
    ("--config.model.attention.implementation=cudnn", "attention.implementation", "cudnn"),
    ("--config.model.attention.kernel_block_size=none", "attention.kernel_block_size", None),
    ("--config.train.aux_loss_weights.load_balance_loss=0.01",
     "train.aux_loss_weights.load_balance_loss", 0.01),
])
def test_values_take_the_type_of_the_registered_default(flag, field, expected):
  config = overridden("--config.model.ffn.name=moe", flag)
  node = config if field.startswith("train.") else config.model
  for key in field.split("."):
    node = node[key]
  assert node == expected and type(node) is type(expected)  # pylint: disable=unidiomatic-typecheck


def test_tuple_options():
  config = overridden("--config.model.attention.name=longformer",
                      "--config.model.attention.global_tokens=(0, 5)")
  assert config.model.attention.global_tokens == (0, 5)
  config = overridden("--config.model.attention.name=longformer",
                      "--config.model.attention.global_tokens=3")
  assert config.model.attention.global_tokens == (3,)


def test_renaming_drops_the_previous_variants_options_only():
  config = listops_short.get_config()
  config.model.attention = dict(name="bigbird", block_size=16, num_random_blocks=1)
  overrides.apply(config, overrides.split(["main", "--config.model.attention.name=local"])[1])
  assert config.model.attention.to_dict() == {"name": "local", "block_size": 16}


@pytest.mark.parametrize("flags, expected", [
    (["--config.model.attention.name=local", "--config.model.attention.windw=2"],
     "model.attention.windw is not an option of attention 'local'; allowed: block_size, "
     "implementation, interpret, kernel_block_size, window, window_tokens"),
    (["--config.model.attention.window=2"],
     "model.attention.window is not an option of attention 'dense'; allowed: implementation"),
    (["--config.model.ffn.name=moe", "--config.model.ffn.num_experts=many"],
     "model.ffn.num_experts='many' is not a valid int (the option's default is 8)"),
    (["--config.model.norm.name=batchnorm"], "model.norm.name='batchnorm' is not a registered"),
    (["--config.train.aux_loss_weights.balance_loss=1"],
     "train.aux_loss_weights.balance_loss is not an aux loss; allowed: load_balance_loss, "
     "router_z_loss"),
])
def test_mistakes_are_one_line_naming_the_field_and_what_is_allowed(flags, expected):
  with pytest.raises(ConfigError) as error:
    overridden(*flags)
  assert expected in one_line(error)


@pytest.mark.slow
def test_cli_typo_in_an_option_is_one_line_and_exit_2(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", "configs/listops_short.py",
       "--workdir", str(tmp_path / "run"), "--config.model.attention.name=local",
       "--config.model.attention.windw=2"],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2
  assert out.stderr.strip() == ("error: model.attention.windw is not an option of attention "
                                "'local'; allowed: block_size, implementation, interpret, "
                                "kernel_block_size, window, window_tokens")
  assert not (tmp_path / "run").exists()


def test_resolve_model_fills_every_option_with_its_default():
  model = resolve_model(overridden("--config.model.attention.name=bigbird",
                                   "--config.model.attention.window=2").model.to_dict())
  assert model["attention"] == {"name": "bigbird", "block_size": 64, "window": 2,
                                "global_blocks": (0, -1), "num_random_blocks": 3, "seed": 0,
                                "window_tokens": None, "implementation": "auto",
                                "interpret": False, "kernel_block_size": None}
  assert model["connection"] == {"name": "residual"}  # depth is set by the model, not config
  assert model["head"]["num_classes"] == 0 and model["head"]["pooler"] is True


def test_config_json_written_before_resolution_still_resumes(tmp_path):
  config = listops_short.get_config()
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(config.to_json_best_effort())  # as older versions wrote it
  workdir.prepare(config, str(run))  # same run: not refused
  saved = json.loads((run / "config.json").read_text())
  assert saved["model"]["norm"] == {"name": "layernorm", "epsilon": 1e-6, "use_bias": True}
  config.model.norm.epsilon = 1e-5  # a different run still is
  with pytest.raises(ConfigError, match=r"model.norm.epsilon: 1e-06 -> 1e-05"):
    workdir.prepare(config, str(run))


def test_moe_kernel_choice_may_change_on_resume(tmp_path):
  """A run recorded with grouped_matmul='blocked' (the default before `auto`) resumes under
  `auto`, or on another backend's kernel: the same experts, computed differently."""
  config = listops_short.get_config()
  config.model.ffn = ml_collections.ConfigDict(dict(name="moe", grouped_matmul="blocked"))
  run = tmp_path / "run"
  workdir.prepare(config, str(run))
  config.model.ffn = ml_collections.ConfigDict(dict(name="moe"))
  workdir.prepare(config, str(run))  # grouped_matmul: 'blocked' -> 'auto', not refused
  config.model.ffn.num_experts = 4
  with pytest.raises(ConfigError, match=r"model.ffn.num_experts: 8 -> 4"):
    workdir.prepare(config, str(run))


def test_attention_kernel_choice_may_change_on_resume(tmp_path):
  """A dense run recorded with implementation=None (before `auto`) resumes under `auto`, and
  a run may move between kernels; the attention itself may not change."""
  config = listops_short.get_config()
  config.model.attention = ml_collections.ConfigDict(dict(name="dense", implementation=None))
  run = tmp_path / "run"
  workdir.prepare(config, str(run))
  config.model.attention = ml_collections.ConfigDict(dict(name="dense"))
  workdir.prepare(config, str(run))
  config.model.attention = ml_collections.ConfigDict(dict(name="dense", implementation="splash",
                                                          interpret=True))
  workdir.prepare(config, str(run))
  config.model.attention = ml_collections.ConfigDict(dict(name="local"))
  with pytest.raises(ConfigError, match=r"model.attention.name: 'dense' -> 'local'"):
    workdir.prepare(config, str(run))


@pytest.mark.slow
def test_cli_run_records_the_resolved_options(tmp_path):
  """End to end: an option absent from the file, set on the command line, trains 2 steps and
  config.json lists it with the variant's other options (defaults)."""
  run = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", "configs/listops_short.py",
       "--workdir", str(run), "--config.progress_bar=False", "--config.train.num_steps=2",
       "--config.train.warmup_steps=1", "--config.train.batch_size=8",
       "--config.eval.batch_size=16", "--config.model.num_layers=1", "--config.model.dim=32",
       "--config.model.mlp_dim=64", f"--config.data.cache_dir={tmp_path / 'cache'}",
       "--config.data.listops.num_train=32", "--config.data.listops.num_eval=16",
       "--config.data.listops.min_length=8", "--config.data.listops.max_length=32",
       "--config.model.attention.name=local", "--config.model.attention.block_size=8"],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  saved = json.loads((run / "config.json").read_text())
  assert saved["model"]["attention"] == {"name": "local", "block_size": 8, "window": 1,
                                           "window_tokens": None, "implementation": "auto",
                                           "interpret": False, "kernel_block_size": None}
  assert saved["model"]["ffn"] == {"name": "mlp", "activation": "gelu"}
