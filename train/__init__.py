"""Training: encoder architectures, self-supervised methods, the training loop and the ``train`` CLI.

Import direction: ``train`` may use ``pipeline`` (the shard reader), never ``probe``.
"""

from train.encoder_io import load_encoder, save_encoder
from train.models import ENCODERS, build_encoder

__all__ = ["ENCODERS", "build_encoder", "load_encoder", "save_encoder"]
