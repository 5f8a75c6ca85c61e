"""LRA Image (Tay et al. 2021): CIFAR-10 as 1,024 grayscale pixel tokens, 10 classes.

    tfds build cifar10 --file_format=array_record   # once, with network
    python -m experiments.main --config configs/lra/image.py --workdir runs/lra/image
    python -m experiments.main --config configs/lra/image.py:smoke --workdir /tmp/lra_image

Data: TFDS cifar10, train[:90%] / train[90%:] / test as LRA, grayscale as TF's
`rgb_to_grayscale` (truncating; experiments/data/tfds_image.py); a pixel value v is token v + 4,
pixel 0 is padding (LRA's `inputs > 0` mask), rows have no CLS. Model as LRA's
cifar10/transformer_base.py (the published Transformer row) over base_cifar10_config.py: 1
layer, 8 heads, width 128, qkv_dim 64, MLP 128, dropout 0.3, attention dropout 0.2, learned
positions, LRA's classifier head; batch 256, 35K steps (200 epochs), Adam lr 5e-4 with one epoch
(175 steps) of warmup and cosine decay, no weight decay. Variant presets: LRA's
cifar10/<variant>_base.py sizes (local: 2 heads; bigbird: 1; longformer: 4 layers, 4 heads).

Still differs from LRA's code: LRA pools a learned CLS vector it prepends (CLS pooling for most
variants; local and longformer pool the mean); our pixel rows have no CLS, so every preset pools
the mean over all 1,024 positions, as LRA's mean. LRA evaluates every 175 steps, we every 1,750.
"""

from configs import lra

# LRA's cifar10/<variant>_base.py sizes (the others keep transformer_base's).
SIZES = {
    "local": dict(num_layers=1, num_heads=2, dim=128, qkv_dim=64, mlp_dim=128, dropout=0.3),
    # LRA's bigbird_base.py sets `num_head = 4`, a new field, so base_cifar10's 1 head stays.
    "bigbird": dict(num_layers=1, num_heads=1, dim=128, qkv_dim=64, mlp_dim=128, dropout=0.3),
    "longformer": dict(num_layers=4, num_heads=4, dim=128, qkv_dim=64, mlp_dim=128,
                       dropout=0.3),
}


def get_config(preset: str = "full"):
  config = lra.lra_config(preset, source="image", pooling="mean", position="learned",
                          dim=128, num_layers=1, num_heads=8, qkv_dim=64, mlp_dim=128,
                          dropout=0.3, attention_dropout=0.2, sizes=SIZES)
  config.data.pixel_zero_is_padding = True
  config.train.update(batch_size=256, num_steps=35_000, schedule="cosine", learning_rate=5e-4,
                      warmup_steps=175, weight_decay=0.0, eval_every=1_750,
                      checkpoint_every=1_750)
  config.eval.batch_size = 256
  if preset == "smoke":
    config.data.image.update(train_split="train[:32]", eval_split="train[32:48]",
                             test_split="test[:16]")
    lra.smoke(config)
  return config
