"""Output heads on top of the encoder's hidden states [batch, length, dim]; importing this
package registers them all.

Interface: `head(hidden, *, inputs, embedding=None, all_layers=None, deterministic=True)`;
`inputs` is the model's input dict (`mask`, `segment_ids`, `predict_positions`, ...),
`embedding` the token embedding table (for tied output layers) and `all_layers` the stacked
[num_layers + 1, batch, length, dim] block outputs, passed only to heads whose class sets
`reads_all_layers = True`. Heads return float32 outputs.

- token.py: `mlm` (BERT), `rtd` (ELECTRA);
- classification.py: `classification` (BERT, Sentence-BERT pooling, per packed segment),
  `lra_classification` (LRA's Dense -> ReLU -> Dense);
- pair.py: `pair_classification` (two towers, LRA's [u, v, u*v, u-v] MLP);
- embedding.py: `embedding`, `embedding_layers` (sentence embeddings: pooling, Matryoshka
  prefixes, layer mixes; NV-Embed latent attention);
- pooling.py: pooling of rows and packed segments.
"""

from encoders.heads.classification import ClassificationHead, LRAClassificationHead  # noqa: F401
from encoders.heads.embedding import EmbeddingHead, LayerEmbeddingHead  # noqa: F401
from encoders.heads.pair import PairClassificationHead  # noqa: F401
from encoders.heads.token import MLMHead, ReplacedTokenDetectionHead  # noqa: F401
