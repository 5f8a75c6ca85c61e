"""Base config: every field of an experiment, with a comment. Other configs start from it.

Not run directly; e.g. `python -m experiments.main --config configs/listops.py --workdir DIR`.
Any field can be overridden on the command line: `--config.model.attention.name=dense`; so
can any option of the chosen variant, listed here or not (experiments/overrides.py):
`--config.model.attention.name=local --config.model.attention.block_size=32`.
"""

import os

import ml_collections
from ml_collections import config_dict

# tiny / small / base model presets, picked with `configs/<file>.py:<preset>`.
PRESETS = {
    "tiny": dict(dim=64, num_layers=2, num_heads=4, mlp_dim=128),
    "small": dict(dim=256, num_layers=4, num_heads=4, mlp_dim=1024),
    "base": dict(dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
}


def default_cache_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "encoders")


def get_config(preset: str = "small") -> ml_collections.ConfigDict:
  """The full config; `preset` sets the model size (tiny | small | base)."""
  if preset not in PRESETS:
    raise ValueError(f"config preset {preset!r}; allowed: {', '.join(PRESETS)}")
  config = ml_collections.ConfigDict()
  config.seed = 0  # init and dropout/mask RNG; same seed + config => same metrics
  config.task = "classify"  # classify | mlm | electra | embed | match (two-tower pairs)
  config.progress_bar = True  # tqdm bar on stderr (process 0 only)

  # ---- Model: one sub-dict per interchangeable piece; `name` picks the registered variant,
  # the other keys are that variant's constructor options (see README's variants table). Options
  # left out take the registered defaults, which the run's config.json records.
  config.model = ml_collections.ConfigDict()
  m = config.model
  m.vocab_size = 0  # 0 = set by the task from its tokenizer / data
  m.max_length = 0  # longest sequence (learned positions); 0 = the task's sequence length
  m.dim = PRESETS[preset]["dim"]  # model width
  m.num_layers = PRESETS[preset]["num_layers"]  # number of blocks
  m.num_heads = PRESETS[preset]["num_heads"]  # attention heads; dim % num_heads == 0
  m.head_dim = 0  # per-head width; 0 = dim // num_heads
  m.mlp_dim = PRESETS[preset]["mlp_dim"]  # FFN hidden width
  m.embed_dim = 0  # embedding width; 0 = dim, else projected to dim (ELECTRA-small checkpoints)
  m.dropout_rate = 0.1  # residual, FFN, embedding and head dropout
  m.attention_dropout_rate = 0.0  # dropout on attention weights (explicit softmax path)
  # dropout on the attention sub-layer's output; None = dropout_rate (ModernBERT: 0.1, all else 0)
  m.attention_output_dropout_rate = config_dict.placeholder(float)
  m.dtype = "float32"  # compute dtype: float32 | bfloat16 (norms, softmax, losses stay f32)
  m.param_dtype = "float32"  # parameter storage dtype
  m.norm_position = "pre"  # pre (x + f(norm(x))) | post (norm(x + f(x)), original BERT)
  # | sandwich (x + norm(f(norm(x))), CogView Sandwich-LN)
  m.embed_norm = False  # norm after the embeddings (BERT-style, usually with post norm)
  m.type_vocab_size = 0  # token-type (segment) embeddings; 0 = none
  m.init_std = 0.02  # std of the normal initialiser of kernels and embeddings
  m.init_method = "normal"  # normal | modernbert (truncated normal, output projections
  # scaled by 1 / sqrt(2 * num_layers); encoders/initializers.py)
  m.skip_first_prenorm = False  # pre-norm: no attention norm in layer 0 (ModernBERT)
  m.scan_layers = True  # nn.scan over identical blocks (fast compile) when the connection allows
  m.remat = "none"  # recompute block activations in backprop: none | full | dots_saveable
  # Variant sub-dicts: `name` and that variant's options. The names, options and papers of every
  # kind are in the README's variants table (and `encoders.registry.names(kind)`).
  m.attention = dict(name="dense")
  m.position = dict(name="learned")
  m.norm = dict(name="layernorm")
  m.ffn = dict(name="mlp", activation="gelu")
  m.connection = dict(name="residual")  # cross-layer connection
  m.head = dict(name="classification", pooling="cls", num_classes=0)  # num_classes 0 = set by
  # the task from its data

  # ---- Data.
  config.data = ml_collections.ConfigDict()
  d = config.data
  d.source = "listops"  # listops | text | tfds | pathfinder | image | aan (task match)
  d.cache_dir = default_cache_dir()  # generated data is written here once and re-read
  d.shuffle_seed = 0  # training order is a pure function of (shuffle_seed, step)
  d.eval_split = "validation"  # listops, pathfinder: validation | test
  d.listops = dict(
      num_train=96_000,  # LRA: 96k train / 2k validation / 2k test
      num_eval=2_000,
      seed=0,  # generator seed (independent of config.seed)
      min_length=500,  # LRA: 500-2000 tokens, inclusive
      max_length=2_000,
      max_depth=10,  # LRA: max tree depth 10
      max_args=10,  # LRA: max 10 arguments per operator
      lra_dir="",  # "" = the generator; else LRA's released lra_release/listops-1000 folder
      # (basic_{train,val,test}.tsv), read instead (max_length still truncates)
  )
  # Pathfinder / Path-X (experiments/data/pathfinder.py): our reimplementation of the original
  # generator at LRA's settings, or LRA's released folder. Pixels are tokens 4..259 (value + 4),
  # no CLS.
  d.pathfinder = dict(
      num_train=160_000,  # LRA: 160k train / 20k validation / 20k test
      num_eval=20_000,
      seed=0,  # generator seed (independent of config.seed)
      size=32,  # LRA's presets: 32 (Pathfinder), 64, 128 (Path-X), 256
      contour_length=14,  # paddles per contour: 6, 9, 14 (LRA's easy, intermediate, hard)
      lra_dir="",  # "" = the generator; else e.g. lra_release/pathfinder32/curv_contour_length_14
  )
  # Pixel sources (pathfinder, image): True = pixel value 0 is padding (token 0, masked out of
  # attention), as LRA's `inputs > 0` padding mask over raw pixels; False = every pixel a token.
  d.pixel_zero_is_padding = False
  # Grayscale images from TFDS as pixel tokens (value + 4, no CLS); LRA's image task: CIFAR-10.
  d.image = dict(
      name="cifar10",  # prepared as ArrayRecord: `tfds build cifar10 --file_format=array_record`
      data_dir=config_dict.placeholder(str),  # TFDS data dir; None = TFDS default
      train_split="train[:90%]",  # LRA: train[:90%] / train[90%:] / test
      eval_split="train[90%:]",
      test_split="test",
  )
  # LRA's byte-level document matching (AAN pairs; task = match): two documents per example.
  d.aan = dict(
      dir="",  # folder holding new_aan_pairs.{train,eval,test}.tsv (lra_release/tsv_data)
      max_length=4_000,  # tokens per document (LRA: 4,000 bytes, no CLS)
      cls=True,  # prepend CLS to each document (counted in max_length); LRA's encoder adds none
      max_train=0,  # cap on examples (0 = all)
      max_eval=0,
  )
  d.text = dict(
      dir="",  # directory of text files; "" = the Python standard library's sources
      pattern="**/*.py",  # glob of files under `dir`
      eval_fraction=0.05,  # share of files (by stable hash of the path) held out for eval
      max_bytes=8_000_000,  # read at most this much text
      seq_len=128,  # tokens per example, CLS included
      max_eval_examples=512,  # cap on eval examples (0 = all)
      tokenizer="bytes",  # bytes | wordpiece (trained on the corpus, cached in cache_dir)
      vocab_size=8192,  # wordpiece vocabulary size (bytes: fixed 260)
  )
  # Sequence packing (Krell et al. 2021): variable-length examples share rows, kept apart by
  # segment_ids; mlm/electra: document pieces, classify: examples (per-segment labels).
  d.packing = dict(
      enabled=False,  # on in configs/mlm.py and configs/electra.py
      method="best_fit",  # best_fit | first_fit (both over lengths sorted decreasing)
      max_segments=16,  # most examples per row (kernelized attention keeps this many apart)
  )
  # Query/document pairs for the embed task: docstring -> function source (stdlib, via ast).
  d.retrieval = dict(
      dir="",  # directory of .py files; "" = the Python standard library's sources
      eval_fraction=0.2,  # share of files (stable hash of the path) whose pairs are eval
      max_train=4_000,  # cap on train pairs (the stdlib gives ~4.2k)
      max_eval=1_000,  # cap on eval pairs = the retrieval corpus (the stdlib gives ~0.8k)
  )
  d.tfds = dict(
      name="imdb_reviews",  # any TFDS text classification dataset, prepared as ArrayRecord
      data_dir=config_dict.placeholder(str),  # TFDS data dir; None = TFDS default
      train_split="train",
      eval_split="test",
      text_key="text",  # feature holding the text
      label_key="label",  # feature holding the integer class
      max_length=512,  # tokens per example (CLS + bytes), truncated
      max_train=0,  # cap on examples (0 = all)
      max_eval=0,
      test_split="test",  # the split eval.select_best tests on
  )

  # ---- Objectives.
  config.mlm = dict(
      mask_rate=0.15,  # BERT: 15% of tokens are selected
      mask_fraction=0.8,  # of the selected: 80% -> [MASK]
      random_fraction=0.1,  # 10% -> random token (the rest stay unchanged)
      masking="token",  # token | whole_word | span (SpanBERT: geometric spans of words)
      span_p=0.2,  # span: geometric parameter of the span length in words (SpanBERT 0.2)
      max_span=10,  # span: longest span in words (SpanBERT 10; mean length ~3.8)
      predict_only_masked=True,  # MLM head only on round(mask_rate * seq_len) gathered positions
  )
  # ELECTRA (Clark et al. 2020): generator MLM + replaced-token detection; task = electra.
  config.electra = dict(
      generator="mlm",  # mlm (a small jointly trained generator) | unigram (corpus unigram)
      width_fraction=0.25,  # generator dim / mlp_dim / heads as a fraction of the discriminator's
      depth_fraction=1.0,  # generator layers as a fraction of the discriminator's
      disc_weight=50.0,  # loss = generator MLM loss + disc_weight * discriminator BCE
      temperature=1.0,  # generator sampling temperature (Gumbel-max on logits / temperature)
  )

  # Contrastive sentence embeddings and distillation; task = embed (experiments/tasks/embed.py).
  config.embed = dict(
      tokenizer="all-MiniLM-L6-v2",  # "bytes" (the text corpus' byte tokenizer) | checkpoint
      # dir (or packaged name) whose tokenizer.json is used
      query_length=64,  # query tokens (truncated)
      doc_length=128,  # document tokens (truncated); queries are padded to it
      temperature=0.05,  # InfoNCE temperature on cosine similarities
      symmetric=True,  # add the document -> query direction
      contrastive_weight=1.0,  # weight of the InfoNCE loss
      matryoshka_dims=(),  # nested prefix widths trained besides the full one (MRL)
      schedule="none",  # none | 2dmse (last + 1 sampled layer) | starbucks (fixed pairs)
      starbucks=((1, 32), (2, 64)),  # starbucks: (layer, dim) pairs; must include the last layer
      teacher="",  # checkpoint dir / packaged name to distil from; "" = no distillation
      distill="kl",  # kl (teacher vs student similarity matrices) | mse (embeddings)
      distill_weight=1.0,  # weight of the distillation loss
      distill_temperature=0.05,  # kl: temperature of both similarity softmaxes
      teacher_batch_size=64,  # batch of the one-off teacher embedding pass
      whitening="none",  # eval: none | train (fit on a seeded sample of train pairs) | eval
      whitening_sample=1_000,  # train whitening: pairs sampled (seed = config.seed)
      student_init="random",  # random | teacher_pca (token/position embeddings from the teacher's
      # top principal components; needs the teacher's vocabulary)
  )

  # ---- Training.
  config.train = ml_collections.ConfigDict()
  t = config.train
  t.batch_size = 32  # global batch (split over data x fsdp devices and processes)
  t.grad_accum_steps = 1  # split each batch into this many sequential micro-batches (same update)
  t.num_steps = 1_000
  t.learning_rate = 1e-3  # peak learning rate
  t.warmup_steps = 100  # linear warmup from 0
  t.schedule = "cosine"  # cosine | linear | constant | wsd (after warmup) | rsqrt (LRA's:
  # learning_rate is the base: lr = base * min(1, step / warmup) / sqrt(max(step, warmup)))
  t.decay_fraction = 0.1  # wsd: share of num_steps in the final 1 - sqrt decay (stable before)
  t.optimizer = "adamw"  # adamw | stable_adamw (AdamW with per-tensor update clipping)
  t.end_lr_fraction = 0.0  # final lr = learning_rate * end_lr_fraction
  t.weight_decay = 0.01  # AdamW decoupled decay on kernels and embeddings
  t.weight_decay_scale = "lr"  # lr: decay lr_t * wd per step (PyTorch / optax AdamW) |
  # schedule: (lr_t / learning_rate) * wd (ModernBERT's StableAdamW; experiments/optim.py)
  t.b1 = 0.9
  t.b2 = 0.98
  t.eps = 1e-6
  t.grad_clip_norm = 1.0  # global-norm clipping; 0 = off
  t.aux_loss_weights = dict()  # load_balance_loss | router_z_loss (MoE) -> weight (default 1.0)
  t.steps_per_run = 0  # stop (with a checkpoint) after this many steps; rerun to go on; 0 = off
  t.save_on_sigterm = True  # SIGTERM: save a checkpoint at the current step and exit 0
  t.on_nonfinite = "stop"  # non-finite loss/grads: stop (update not applied) | skip the batch
  t.log_every = 50  # train metrics every N steps
  t.eval_every = 500  # eval every N steps and at the end
  t.checkpoint_every = 500  # checkpoint every N steps and at the end
  t.keep_checkpoints = 2  # keep the K most recent
  t.keep_period = 0  # also keep every checkpoint whose step is a multiple (0 = off)
  t.async_checkpoints = True  # write checkpoints in a background thread

  # ---- Evaluation.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 64
  config.eval.max_batches = 0  # 0 = the whole eval split
  config.eval.seed = 1234  # fixed RNG for eval-time randomness (MLM masks)
  # Best-checkpoint evaluation: keep the parameters with the best eval (validation) value of
  # this metric ("" = off) in checkpoints_best/, and at the end evaluate the task's test split
  # on them (a `test` record in metrics.jsonl).
  config.eval.select_best = ""
  config.eval.select_mode = "max"  # max | min

  # ---- Initialisation from another run (experiments/init_from.py); used only when this
  # run's workdir has no checkpoint yet. Optimizer state and step start fresh.
  config.init_from = dict(
      workdir="",  # "" = off; else a finished or running run's workdir (its latest checkpoint)
      pretrained="",  # or: a Hugging Face BERT-family directory / packaged name (encoder only)
      upcycle=True,  # dense source + MoE here: upcycle (encoders/moe/upcycle.py); else as is
      drop_fraction=0.0,  # Drop-Upcycling: share of each expert's hidden units re-initialised
      encoder_only=False,  # workdir: take only its encoder (another task's run); head from init
  )

  # ---- Devices: mesh axis sizes; -1 = all remaining devices.
  config.mesh = dict(data=-1, fsdp=1, tensor=1, expert=1)
  return config
