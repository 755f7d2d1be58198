"""Encoders and heads. An encoder is anything with named feature taps: :class:`TapEncoder` (contract.py).

The registry (timm-like: ``build_encoder('alexnet')``, ``list_encoders()``, ``@register_encoder``) finds every
module of this package and the plugin files of ``SINGLE_IMAGE_SSL_PLUGINS`` when it is first read, so a new
encoder is one new file (docs/architecture.md, "How to add an encoder").
"""

from train.models.contract import TapEncoder, output_shape
from train.models.encoders import ConvEncoder, Sobel
from train.models.registry import ENCODERS, build_encoder, default_head, list_encoders, register_encoder

__all__ = ["ENCODERS", "ConvEncoder", "Sobel", "TapEncoder", "build_encoder", "default_head", "list_encoders",
           "output_shape", "register_encoder"]
