"""Baselines 5 and 6: ELECTRA vs MLM at matched compute, and 40% vs 15% masking, judged by
fine-tuning on code retrieval.

    python -m experiments.compare --config configs/baselines/pretraining_objectives.py \
        --workdir runs/baselines/pretraining_objectives

- Clark et al. 2020, "ELECTRA": replaced-token detection learns more per unit of compute than
  MLM ("less than 1/4 of their compute" to match RoBERTa/XLNet; "strong for small models").
- Wettig et al. 2023, "Should You Mask 15% in Masked Language Modeling?": "masking 40%
  outperforms 15%" (BERT-large, downstream fine-tuning).

One study, per seed (0-2): three pretraining runs of the 128-wide MLM_MINI encoder on the
stdlib corpus (bytes, 128-token packed rows, batch 32): `mlm15` (BERT's 15%, 80/10/10),
`mlm40` (40%, same split), both 400 steps, and `electra` (generator 1/4 wide, RTD weight 50)
for as many steps as give the same training FLOPs as `mlm15` (XLA's count: an ELECTRA step
costs 26.3 GFLOPs, an MLM step 23.8, so 360 steps; results.md reports each run's
`train_flops`). Then each pretrained encoder is fine-tuned on the stdlib docstring -> function
retrieval pairs (experiments/data/retrieval.py; byte tokens, queries 64, documents 128;
InfoNCE, mean pooling) for 200 steps, and `scratch` fine-tunes a random encoder the same way
(the no-pretraining control). The primary metric is the fine-tuned MRR@10 over the 771 eval
pairs. The pretraining corpus contains the retrieval task's source files (unlabelled), the
same for every objective.

Every cell uses rotary positions (RoPE, Su et al. 2021) instead of learned absolute ones: with
learned positions the discriminator's learning barely shows within this budget (an independent
audit measured RTD AUC 0.78 and recall 0.18 at step 400 with RoPE; the learned-position runs of this
study ended at recall 0.3%), and the MLM cells use the same positions for a matched comparison
(so do the fine-tuning and `scratch` cells: the overrides apply to every cell). RoPE adds no
parameters and a negligible share of the FLOPs, so 360 ELECTRA steps still match 400 MLM steps
(results.md reports `train_flops`). ELECTRA cells also report the threshold-free `rtd_auc` and
`disc_loss` beside `disc_loss_base_rate` (experiments/tasks/electra.py), next to the
0.5-threshold `rtd_recall`.
"""

from configs.baselines import MLM_MINI, SMOKE, SMOKE_TEXT, check_preset, dotted

ELECTRA_STEPS = 360  # 400 MLM steps x (23.75 / 26.34 GFLOPs per step, XLA's count)


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Pretraining objectives (MLM 15%, MLM 40%, ELECTRA) -> fine-tuned retrieval"
  study.base = "configs/mlm.py:small"
  pretrain, electra, finetune = 400, ELECTRA_STEPS, 200
  overrides = {**MLM_MINI, "train.checkpoint_every": 400, "model.position": dict(name="rope")}
  if preset == "smoke":
    overrides.update({**SMOKE, **SMOKE_TEXT, "train.checkpoint_every": 2})
    pretrain, electra, finetune = 2, 2, 2

  def finetune_from(source):
    cell = {"base": "configs/base.py:small", "task": "embed", "data.source": "retrieval",
            "embed.tokenizer": "bytes", "model.head": dict(name="embedding", pooling="mean",
                                                          normalize=True),
            "train.num_steps": finetune, "train.eval_every": finetune,
            "train.checkpoint_every": finetune, "train.learning_rate": 5e-4,
            "train.warmup_steps": min(30, finetune - 1), "eval.batch_size": 128}
    if preset == "smoke":
      cell.update({"data.retrieval.max_train": 64, "data.retrieval.max_eval": 32})
    if source:
      cell.update({"init_from.workdir": f"{{workdir}}/cells/seed={{seed}},variant={source}",
                   "init_from.encoder_only": True})
    return cell

  pretraining = {"train.num_steps": pretrain, "train.eval_every": pretrain}
  study.variants = dotted({
      "mlm15": {**pretraining, "mlm.mask_rate": 0.15},
      "mlm40": {**pretraining, "mlm.mask_rate": 0.40},
      "electra": {"base": "configs/electra.py:small", "train.num_steps": electra,
                  "train.eval_every": electra},
      "mlm15_finetuned": finetune_from("mlm15"),
      "mlm40_finetuned": finetune_from("mlm40"),
      "electra_finetuned": finetune_from("electra"),
      "scratch_finetuned": finetune_from(None),
  })
  study.overrides = dotted(overrides)
  variants = ("mlm15", "mlm40", "electra", "mlm15_finetuned", "mlm40_finetuned",
              "electra_finetuned", "scratch_finetuned")
  if preset == "smoke":  # one pretraining -> fine-tuning chain of each kind
    variants = ("mlm40", "electra", "electra_finetuned")
  study.grid = dotted({"variant": variants, "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "mrr@10"
  study.extra_metrics = ("ndcg@10", "recall@100", "rtd_auc", "rtd_recall", "disc_loss",
                         "disc_loss_base_rate")
  study.mode = "max"
  study.param_tolerance = 10.0  # pretraining and fine-tuning rows differ in heads by design
  return study
