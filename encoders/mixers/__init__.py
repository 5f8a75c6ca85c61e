"""Token mixers without queries and keys (FNet, S4D, S5, bidirectional Mamba, Hyena), registered
as `attention` variants so that a config, a study or a contract test swaps them in with
`model.attention.name`; importing this package registers them all."""

from encoders.mixers import (  # noqa: F401
    fnet,
    hyena,
    mamba,
    ssm,
)
