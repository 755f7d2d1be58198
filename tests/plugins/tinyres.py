"""A tiny ResNet-style encoder as a plugin file: the whole of what a new encoder needs (taps stage1..stage3).

Tests copy this file into a temporary folder and name it in SINGLE_IMAGE_SSL_PLUGINS; nothing else in the project
mentions it. It implements the encoder contract (train/models/contract.py) without subclassing anything of the
project's: 32 px RGB in, a 3x3 stem, three residual stages (16, 32, 64 channels; strides 1, 2, 2) with BatchNorm,
global average pooling as the final representation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from train.models import register_encoder
from train.models.contract import select_taps
from train.models.folding import fold_batchnorm


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (1x1 conv-BN where the shape changes) shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()

    def conv_bn_pairs(self, prefix: str) -> list[tuple[str, str]]:
        pairs = [(f"{prefix}.conv1", f"{prefix}.bn1"), (f"{prefix}.conv2", f"{prefix}.bn2")]
        if len(self.shortcut):
            pairs.append((f"{prefix}.shortcut.0", f"{prefix}.shortcut.1"))
        return pairs

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyResNet(nn.Module):
    taps = ("stage1", "stage2", "stage3")
    input_size = 32
    input_channels = 3

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        # the stem sits before the first tap, so it belongs to stage1's module (the contract's partition rule)
        self.stage1 = nn.Sequential(stem, BasicBlock(width, width, 1))
        self.stage2 = BasicBlock(width, 2 * width, 2)
        self.stage3 = BasicBlock(2 * width, 4 * width, 2)

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = select_taps(self.taps, names)
        last = max((self.taps.index(n) for n in wanted), default=-1)
        out = {}
        for name in self.taps[:last + 1]:
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_taps(x)["stage3"].mean(dim=(2, 3))

    def first_layer_weight(self) -> Tensor:
        return self.stage1[0][0].weight

    def tap_module(self, name: str) -> nn.Module:
        select_taps(self.taps, [name])
        return getattr(self, name)

    def for_probing(self) -> TinyResNet:
        pairs = [("stage1.0.0", "stage1.0.1"), *self.stage1[1].conv_bn_pairs("stage1.1"),
                 *self.stage2.conv_bn_pairs("stage2"), *self.stage3.conv_bn_pairs("stage3")]
        return fold_batchnorm(self, pairs)


@register_encoder("tinyres")
def tinyres(width: int = 16) -> TinyResNet:
    """A three-stage ResNet-style encoder for 32 px images (a test plugin)."""
    return TinyResNet(width)
