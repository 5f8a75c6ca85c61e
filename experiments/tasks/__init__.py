"""Tasks by name (`config.task`)."""

from __future__ import annotations

from encoders.errors import ConfigError
from experiments.tasks.base import Task
from experiments.tasks.classify import ClassifyTask
from experiments.tasks.electra import ElectraTask
from experiments.tasks.embed import EmbedTask
from experiments.tasks.glue import GLUETask
from experiments.tasks.match import MatchTask
from experiments.tasks.mlm import MLMTask

TASKS: dict[str, type[Task]] = {"classify": ClassifyTask, "electra": ElectraTask,
                                "embed": EmbedTask, "glue": GLUETask, "match": MatchTask,
                                "mlm": MLMTask}


def make_task(config) -> Task:
  if config.task not in TASKS:
    raise ConfigError(f"task={config.task!r} unknown; allowed: {', '.join(sorted(TASKS))}")
  return TASKS[config.task](config)
