"""Masked language modelling (BERT objective) on a local text corpus, byte-level tokens.

    python -m experiments.main --config configs/mlm.py:small --workdir runs/mlm

Default corpus: the Python standard library's sources (on every machine, no download); point
`--config.data.text.dir=/path/to/texts --config.data.text.pattern='**/*.txt'` elsewhere.
Packing is on (document pieces share rows, kept apart by segment_ids); masking options:
`--config.mlm.masking=span --config.mlm.mask_rate=0.3`; a trained vocabulary:
`--config.data.text.tokenizer=wordpiece --config.data.text.vocab_size=8192`.
"""

from configs import base


def get_config(preset: str = "small"):
  config = base.get_config(preset)
  config.task = "mlm"
  config.data.source = "text"
  config.data.text.seq_len = 128
  config.data.packing.enabled = True
  config.model.head = dict(name="mlm", tie_embeddings=True)
  config.train.batch_size = 32
  config.train.num_steps = 2_000
  config.train.learning_rate = 1e-3
  # 10% of num_steps unless set: --config.train.num_steps=300 warms up for 30 steps, not 200.
  config.train.warmup_steps = config.train.get_ref("num_steps") // 10
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config
