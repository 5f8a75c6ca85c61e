"""Compile a config for GPUs and TPUs on any machine: memory, FLOPs and a roofline estimate.

    python -m experiments.aot --config configs/mlm.py --target h100
    python -m experiments.aot --config configs/mlm.py --target v5e:2x2 --find_batch
    python -m experiments.aot --config configs/modernbert.py:base --target h200 \\
        --config.train.batch_size=64 --out runs/aot/modernbert_h200.json

Needs the [aot] extra (jax's CUDA plugin and libtpu for the installed jax). The process's own
arrays stay on the CPU; the target's devices are compile-only (experiments/aot/targets.py). What
is compiled and reported: experiments/aot/compile.py.
"""
