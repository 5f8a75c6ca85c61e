"""Bad input gets a one-line error naming the field or path, before anything compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from configs import listops_short, mlm
from encoders.errors import ConfigError
from experiments.train import train_and_evaluate
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert "\n" not in message
  return message


def test_unknown_variant_lists_valid_names():
  with pytest.raises(ConfigError) as e:
    tiny_config(attention={"name": "nope"})
  assert "model.attention.name='nope'" in one_line(e) and "dense" in one_line(e)


def test_unknown_variant_option_names_field_and_allowed():
  with pytest.raises(ConfigError) as e:
    tiny_config(ffn={"name": "mlp", "width": 3})
  assert "model.ffn.width" in one_line(e) and "activation" in one_line(e)


def test_dim_not_divisible_by_heads():
  with pytest.raises(ConfigError) as e:
    tiny_config(dim=30, num_heads=4)
  assert "model.dim=30" in one_line(e) and "model.num_heads=4" in one_line(e)


def test_unknown_model_field():
  with pytest.raises(ConfigError) as e:
    tiny_config(hidden_size=3)
  assert "model.hidden_size" in one_line(e)


def test_missing_text_dir_names_path(tmp_path):
  config = mlm.get_config("tiny")
  config.data.text.dir = str(tmp_path / "missing")
  with pytest.raises(ConfigError) as e:
    train_and_evaluate(config, str(tmp_path / "run"))
  assert str(tmp_path / "missing") in one_line(e) and "data.text.dir" in one_line(e)


def test_mesh_that_does_not_fit_the_devices(tmp_path):
  config = listops_short.get_config()
  config.mesh.data = 3
  with pytest.raises(ConfigError) as e:
    train_and_evaluate(config, str(tmp_path / "run"))
  assert "mesh" in one_line(e)


def test_workdir_of_another_model_is_refused_and_kept(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  config = listops_short.get_config()
  saved = json.loads(config.to_json_best_effort())
  saved["model"]["dim"] = 999
  (workdir / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ConfigError) as e:
    train_and_evaluate(config, str(workdir))
  assert "model.dim: 999 -> 128" in one_line(e)
  assert json.loads((workdir / "config.json").read_text()) == saved


def test_bad_layer_pattern_fails_before_the_workdir_is_written(tmp_path):
  """A pattern that cannot build the model leaves no config.json behind (which would refuse
  the corrected command as "a different run")."""
  config = listops_short.get_config()
  config.model.layer_pattern = ({"attention": {"name": "dense"}}, {}, {})  # 3 entries, 2 layers
  with pytest.raises(ConfigError) as e:
    train_and_evaluate(config, str(tmp_path / "run"))
  assert "model.layer_pattern has 3 entries" in one_line(e)
  assert not (tmp_path / "run" / "config.json").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", "configs/listops_short.py",
       "--workdir", str(tmp_path / "run"), "--config.model.attention.name=nope"],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: model.attention.name='nope'")
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, expected", [
    (["--config.train.num_step=1"], 'Did you mean "num_steps"'),
    (["--config.train.num_steps=abc"], "invalid literal for int()"),
])
@pytest.mark.slow
def test_cli_bad_override_is_one_line(tmp_path, args, expected):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", "configs/listops_short.py",
       "--workdir", str(tmp_path / "run"), *args],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2
  assert len(out.stderr.strip().splitlines()) == 1 and expected in out.stderr


@pytest.mark.slow
def test_cli_missing_config_file_is_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", "configs/nope.py",
       "--workdir", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert out.returncode == 2
  assert out.stderr.strip() == "error: --config: [Errno 2] No such file or directory: " \
                               "'configs/nope.py'"
