"""Network registry (timm-like): ``build_encoder('alexnet')``, ``ENCODERS``, ``register_encoder``.

Every encoder is a :class:`~train.models.encoders.ConvEncoder`: a stack of blocks ``conv1``..``convN``, each
an ``nn.Sequential`` with children ``conv``, ``bn``, ``relu`` (and ``pool``), so that probe code can fold
BatchNorm into ``conv`` and tap post-activation features by layer name.
"""

from train.models.encoders import ConvEncoder, Sobel
from train.models.registry import ENCODERS, build_encoder, list_encoders, register_encoder

__all__ = ["ENCODERS", "ConvEncoder", "Sobel", "build_encoder", "list_encoders", "register_encoder"]
