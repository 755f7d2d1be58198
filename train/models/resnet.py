"""ResNet-18 from timm as tap encoders: ``resnet18`` (ImageNet stem, 224 px) and ``resnet18-cifar`` (32 px).

The stages are timm's (``timm.models.resnet.make_blocks`` of BasicBlocks, timm's init: Kaiming convolutions, the
last BatchNorm of each block at zero); the stem is built here, since timm's fixes it at 64 channels. Each tap is one
submodule: ``stem`` (conv, BN, ReLU), ``layer1``..``layer4``.

- ``resnet18``: He et al. (2016)'s ImageNet stem, a 7x7/2 convolution and a 3x3/2 max-pool; at 224 px the taps
  are 64x112x112 (stem, before the pool), 64x56x56, 128x28x28, 256x14x14, 512x7x7.
- ``resnet18-cifar``: the stem every CIFAR SSL reference uses (SimCLR's appendix B.9, solo-learn, lightly): a 3x3/1
  convolution and no max-pool; at 32 px the taps are 64x32x32, 64x32x32, 128x16x16, 256x8x8, 512x4x4.

``width`` (default 64) scales every stage (``width``, 2, 4, 8 x ``width`` channels), for training on a CPU.
``forward`` is the global average pool of layer4, (B, 8 * width): what a projection head sits on.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from train.models.contract import select_taps
from train.models.folding import fold_batchnorm
from train.models.registry import register_encoder

RESNET18_BLOCKS = (2, 2, 2, 2)


class ResNetEncoder(nn.Module):
    """A timm ResNet regrouped into taps ``stem``, ``layer1``..``layer4`` (each the post-ReLU output of its part).

    The stem tap is taken before the max-pool (as AlexNet's conv taps are before theirs); the pool has no
    parameters and runs at the start of layer1's part.
    """

    taps = ("stem", "layer1", "layer2", "layer3", "layer4")
    input_channels = 3

    def __init__(self, *, cifar_stem: bool, width: int = 64) -> None:
        # timm is imported here, not at module level: the registry imports every module of train/models whenever
        # it is read, and importing timm costs every probe and train command about a second
        from timm.models.resnet import BasicBlock, make_blocks

        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        # timm's ResNet fixes the stem at 64 channels; its make_blocks takes any widths, so the stem is built here
        stem_conv = (nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False) if cifar_stem
                     else nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False))
        self.input_size = 32 if cifar_stem else 224
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm2d(width), nn.ReLU())
        # parameter-free, between the stem tap and layer1
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages, _ = make_blocks((BasicBlock,) * 4, tuple(width * 2 ** i for i in range(4)), RESNET18_BLOCKS,
                                inplanes=width)
        for name, stage in stages:
            self.add_module(name, stage)
        self._init_weights()
        self.out_channels = 8 * width

    def _init_weights(self) -> None:
        """timm's ResNet initialisation: Kaiming (fan out) convolutions, BatchNorm at identity, and the last
        BatchNorm of each residual branch at zero (each block starts as its shortcut)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if hasattr(module, "zero_init_last"):  # timm's blocks
                module.zero_init_last()

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = select_taps(self.taps, names)
        last = max((self.taps.index(n) for n in wanted), default=-1)
        out: dict[str, Tensor] = {}
        for index, name in enumerate(self.taps[:last + 1]):
            if index == 1:
                x = self.maxpool(x)
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_taps(x, ["layer4"])["layer4"].mean(dim=(2, 3))

    def first_layer_weight(self) -> Tensor:
        return self.stem[0].weight

    def tap_module(self, name: str) -> nn.Module:
        select_taps(self.taps, [name])
        return getattr(self, name)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Every (convolution, BatchNorm) pair, as dotted paths, for :func:`fold_batchnorm`."""
        pairs = [("stem.0", "stem.1")]
        for layer in self.taps[1:]:
            for index, block in enumerate(getattr(self, layer)):
                prefix = f"{layer}.{index}"
                pairs += [(f"{prefix}.conv1", f"{prefix}.bn1"), (f"{prefix}.conv2", f"{prefix}.bn2")]
                if block.downsample is not None:
                    pairs.append((f"{prefix}.downsample.0", f"{prefix}.downsample.1"))
        return pairs

    def for_probing(self) -> ResNetEncoder:
        """An eval-mode copy with every BatchNorm folded into the convolution before it."""
        return fold_batchnorm(self, self.conv_bn_pairs())


@register_encoder("resnet18")
def resnet18(width: int = 64) -> ResNetEncoder:
    """ResNet-18 with the ImageNet stem (7x7/2 conv, 3x3/2 max-pool), 224 px input; ``width`` scales the stages."""
    return ResNetEncoder(cifar_stem=False, width=width)


@register_encoder("resnet18-cifar")
def resnet18_cifar(width: int = 64) -> ResNetEncoder:
    """ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool), 32 px input; ``width`` scales the stages."""
    return ResNetEncoder(cifar_stem=True, width=width)



# Reduced widths under names of their own, for the command line (`train --arch` takes a name, not options): a
# ResNet-18 at width w costs about (w / 64)^2 of width 64's compute, which is what makes it trainable on a CPU
# (experiments/targets/modern.py's quick preset; bench/results/modern.md). `random:resnet18-cifar:width=16` is the same
# network as `random:resnet18-cifar-w16`.
REDUCED_WIDTHS = (16, 32)


def _reduced_width(width: int) -> None:
    def factory() -> ResNetEncoder:
        return ResNetEncoder(cifar_stem=True, width=width)

    factory.__doc__ = f"ResNet-18 with the CIFAR stem at width {width} (stages of {width}..{8 * width} channels)."
    register_encoder(f"resnet18-cifar-w{width}")(factory)


for _width in REDUCED_WIDTHS:
    _reduced_width(_width)
