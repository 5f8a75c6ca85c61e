"""Baseline 8: mean vs CLS pooling, with and without whitening, on the imported MiniLM
(zero-shot code retrieval over the Python standard library).

    python -m experiments.compare --config configs/baselines/pooling.py \
        --workdir runs/baselines/pooling

Huang et al. 2021, "WhiteningBERT": "averaging all tokens is better than only using [CLS]",
and whitening the sentence embeddings helps. Ours: the imported sentence-transformers
all-MiniLM-L6-v2 (`init_from.pretrained`, `train.num_steps = 0`: evaluated as imported) on
the stdlib docstring -> function retrieval task (771 eval pairs, every query against all
documents; queries 64 tokens, documents 128): CLS or mean pooling of the last layer, then
optionally whitening (mean and covariance of the embeddings of 1,000 training pairs sampled
with the cell's seed; no eval text is seen), cosine similarity. Seeds vary only the whitening
sample; without whitening the cells are deterministic (std 0). Note that this checkpoint was
trained with mean pooling, so CLS is off its training objective; WhiteningBERT's claim is for
unsupervised BERT-family encoders.
"""

from configs.baselines import check_preset, dotted


def get_config(preset: str = "full"):
  check_preset(preset)
  study = dotted({})
  study.name = "Pooling and whitening: all-MiniLM-L6-v2, zero-shot stdlib code retrieval"
  study.base = "configs/embed_finetune.py:dense"
  overrides = {"train.num_steps": 0, "train.warmup_steps": 0, "progress_bar": False,
               "eval.batch_size": 128, "embed.whitening_sample": 1_000}
  if preset == "smoke":
    overrides.update({"data.retrieval.max_train": 48, "data.retrieval.max_eval": 24,
                      "embed.whitening_sample": 48, "eval.batch_size": 24})

  def pooled(pooling, whitening):
    return {"model.head": dict(name="embedding", pooling=pooling, normalize=False),
            "embed.whitening": whitening}

  study.variants = dotted({
      "cls": pooled("cls", "none"),
      "mean": pooled("mean", "none"),
      "cls_whitened": pooled("cls", "train"),
      "mean_whitened": pooled("mean", "train"),
  })
  study.overrides = dotted(overrides)
  variants = ("cls", "mean", "cls_whitened", "mean_whitened")
  study.grid = dotted({"variant": ("cls", "mean_whitened") if preset == "smoke" else variants,
                       "seed": (0,) if preset == "smoke" else (0, 1, 2)})
  study.primary_metric = "mrr@10"
  study.extra_metrics = ("ndcg@10", "recall@100")
  study.mode = "max"
  study.param_tolerance = 0.0
  return study
