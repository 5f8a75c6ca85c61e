"""GLUE (Wang et al. 2019): the nine tasks x 3 seeds, reported in the GLUE paper's layout (one
column per task, MRPC/QQP F1/accuracy, STS-B Pearson/Spearman, MNLI matched/mismatched, and
the GLUE score: the mean of the task scores, two-metric tasks averaged first).

    TFDS_DATA_DIR=~/tensorflow_datasets python -m experiments.compare \
        --config configs/baselines/glue.py --workdir runs/baselines/glue
    TFDS_DATA_DIR=... python -m experiments.compare \
        --config configs/baselines/glue.py:/path/to/bert-dir --workdir runs/baselines/glue_bert

Needs every task prepared once (README, "GLUE"):
`tfds build glue/<task> --data_dir ~/tensorflow_datasets --file_format=array_record`.
`full`: our small model from scratch on byte tokens (a floor, CPU scale: 600 steps per task on
at most 8,000 training examples); a checkpoint directory as the preset fine-tunes that
imported checkpoint instead (its tokenizer, BERT's lr 2e-5). `smoke`: three tasks (single
sentence, pair, regression), one seed, two steps, for the tests' mock data.
"""

from configs.baselines import SMOKE, check_preset, dotted

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def get_config(preset: str = "full"):
  checkpoint = preset if preset not in ("full", "smoke") else ""
  if not checkpoint:
    check_preset(preset)
  study = dotted({})
  study.name = "GLUE" + (f": fine-tuning {checkpoint}" if checkpoint else ": from scratch")
  study.base = f"configs/glue.py:{checkpoint or 'small'}"
  overrides = {"train.num_steps": 600, "train.eval_every": 600, "train.checkpoint_every": 600,
               "train.log_every": 50, "data.glue.max_train": 8_000, "progress_bar": False}
  if not checkpoint:
    overrides.update({"model.dim": 128, "model.num_layers": 2, "model.num_heads": 4,
                      "model.mlp_dim": 512})
  if preset == "smoke":
    overrides.update({**SMOKE, "model.num_layers": 1, "train.num_steps": 2,
                      "train.eval_every": 2, "train.checkpoint_every": 2,
                      "data.glue.max_length": 32, "data.glue.max_train": 16,
                      "data.glue.max_eval": 8, "eval.batch_size": 8})
  study.overrides = dotted(overrides)
  study.variants = dotted({"pretrained" if checkpoint else "scratch": {}})
  study.grid = dotted({
      "variant": ("pretrained" if checkpoint else "scratch",),
      "data.glue.task": ("sst2", "mrpc", "stsb") if preset == "smoke" else TASKS,
      "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "score"  # the task's GLUE score (mean of its metrics)
  study.extra_metrics = ("accuracy",)
  study.mode = "max"
  study.param_tolerance = 0.05  # the regression head has fewer outputs
  study.table = "glue"
  return study
