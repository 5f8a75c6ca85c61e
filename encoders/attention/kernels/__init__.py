"""Accelerator kernels behind the attention layouts: `pallas_gpu` (our Triton block-sparse flash
kernel) and `splash` (TPU splash attention); `encoders/attention/implementation.py` picks one."""
