"""The scattering baseline (paper Table 2 row b, Table 4): kymatio's 2-D scattering transform as an encoder.

Oyallon, Belilovsky, Zagoruyko (2017), "Scaling the scattering transform: deep hybrid networks": a fixed cascade
of Morlet wavelet convolutions and moduli, J = 2 scales, L = 8 angles, order 2, in place of a network's first two
convolutional layers. Nothing is learnt: the filters are rebuilt from the keyword arguments, so they are kept out
of the state dict (an ``encoder.pt`` of ``scattering`` holds no tensors) and ``first_layer_weight()`` is None.

Output, per colour channel: 1 order-0 + J*L = 16 order-1 + L*L*J*(J-1)/2 = 64 order-2 coefficients = 81 maps
at H / 2**J x W / 2**J; the three colour channels are stacked, so an RGB image gives 3 x 81 = 243 channels
(at 224 px: 243 x 56 x 56; at 32 px: 243 x 8 x 8), channel ``c * 81 + k`` being coefficient ``k`` of colour ``c``
(kymatio's order: order 0, then order 1 by (j, theta), then order 2 by (j1, theta1, j2, theta2)).

Taps of ``scattering`` / ``scattering-cifar`` (named after the AlexNet layers they stand in for, so results
land in the paper's columns):

- ``conv1``: orders 0 and 1 only (3 x 17 = 51 channels): one wavelet-modulus layer, our conv1-equivalent (the
  paper reports no conv1 number for scattering; this tap is an extra, not a paper row);
- ``conv2``: the whole order-2 transform (243 channels), the conv2-equivalent that Table 2 row b (18.9%) probes.

How the probes read them: on ImageNet-style data each tap is adaptively max-pooled to the grid whose size is
nearest the paper's dimensions (probe/features.py): conv1 51 x 14 x 14 = 9,996, conv2 243 x 6 x 6 = 8,748; on
CIFAR conv1 is kept whole (51 x 8 x 8 = 3,264) and conv2 (243 x 8 x 8 = 15,552) is pooled to 243 x 6 x 6 = 8,748,
as every CIFAR-style map above 9,600 dimensions is.

``scattering-alexnet`` (Table 4's "Scattering" row, for ``probe finetune``): the fixed scattering as tap ``conv2``
(it replaces conv1-conv2), then AlexNet's conv3..conv5 (384-384-256, 3x3, BN, ReLU) with conv3 taking the 243
scattering channels. The scattering map (56 x 56 at 224 px) goes through the two 3x3/2 max-pools AlexNet has
after conv1 and conv2 (56 -> 27 -> 13, AlexNet's own geometry) and an affine-free BatchNorm (the coefficients'
scales differ by orders of magnitude between orders; Oyallon et al. normalise them likewise) before conv3, so
conv5 ends at AlexNet's 256 x 6 x 6 and AlexNet's fc6-fc8 head fits. ``probe finetune random:scattering-alexnet``
with the default ``--freeze conv2 --keep conv2`` trains everything above the fixed front end.

kymatio 0.3.0's ``from kymatio.torch import Scattering2D`` fails with current scipy (``ImportError: sph_harm``,
raised by the 3-D filter bank it imports too); ``kymatio.Scattering2D(..., frontend='torch')`` builds the same
2-D torch module without touching the 3-D code, so that is the only way this module reaches kymatio.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import kymatio
from torch import Tensor, nn

from train.models.contract import select_taps
from train.models.folding import fold_batchnorm
from train.models.heads import alexnet_classifier
from train.models.registry import register_encoder

J, L, ORDER = 2, 8, 2  # Oyallon et al. (2017)


def coefficients(order: int, j: int = J, angles: int = L) -> int:
    """Scattering coefficients per input channel up to `order` (0, 1 or 2): 1, 1 + J L, 1 + J L + L^2 J(J-1)/2."""
    counts = [1, j * angles, angles * angles * j * (j - 1) // 2]
    return sum(counts[:order + 1])


class Scattering(nn.Module):
    """The fixed 2-D scattering front end: (B, C, H, W) -> (B, C * 81, H / 4, W / 4) for J = 2, L = 8."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.transform = kymatio.Scattering2D(J=J, shape=(input_size, input_size), L=L, max_order=ORDER,
                                              frontend="torch")
        # kymatio registers its filters as persistent buffers; they are constants rebuilt from (J, L, size), so
        # they leave the state dict (as Sobel's do): an encoder.pt never depends on kymatio's filter layout.
        for name, buffer in list(self.transform.named_buffers(recurse=False)):
            delattr(self.transform, name)
            self.transform.register_buffer(name, buffer, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x.contiguous()).flatten(1, 2)  # (B, C, 81, H', W') -> (B, C * 81, H', W')


class ScatteringEncoder(nn.Module):
    """Scattering coefficients as an encoder: taps conv1 (orders 0-1) and conv2 (orders 0-2); no parameters."""

    taps = ("conv1", "conv2")
    input_channels = 3

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        self.input_size = input_size
        self.scattering = Scattering(input_size)
        self.first_order = coefficients(1)

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = select_taps(self.taps, names)
        if not wanted:
            return {}
        full = self.scattering(x)
        out = {}
        if "conv1" in wanted:  # kymatio orders orders 0 and 1 first, per colour channel
            per_colour = full.unflatten(1, (self.input_channels, -1))
            out["conv1"] = per_colour[:, :, :self.first_order].flatten(1, 2)
        if "conv2" in wanted:
            out["conv2"] = full
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.scattering(x)

    def first_layer_weight(self) -> None:
        return None  # fixed wavelets, nothing learnt: `probe filters` says so

    def tap_module(self, name: str) -> nn.Module:
        select_taps(self.taps, [name])
        return self.scattering  # both taps come from the one transform (which has no parameters)

    def for_probing(self) -> ScatteringEncoder:
        return copy.deepcopy(self).eval()


def _conv_block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 3, 1, 1),
                                                      bn=nn.BatchNorm2d(out_channels), relu=nn.ReLU())
    if pool:
        layers["pool"] = nn.MaxPool2d(3, 2)
    return nn.Sequential(layers)


class ScatteringAlexNet(nn.Module):
    """The fixed scattering as tap conv2, then AlexNet's conv3..conv5 trained above it (Table 4, "Scattering")."""

    taps = ("conv2", "conv3", "conv4", "conv5")
    input_channels = 3

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        self.input_size = input_size
        self.scattering = Scattering(input_size)
        channels = self.input_channels * coefficients(ORDER)
        conv3 = _conv_block(channels, 384, pool=False)
        # AlexNet's two pools after conv1/conv2 bring the J = 2 map to conv3's 13 x 13; then normalise the input
        self.conv3 = nn.Sequential(OrderedDict(
            [("prepool1", nn.MaxPool2d(3, 2)), ("prepool2", nn.MaxPool2d(3, 2)),
             ("norm", nn.BatchNorm2d(channels, affine=False)), *conv3.named_children()]))
        self.conv4 = _conv_block(384, 384, pool=False)
        self.conv5 = _conv_block(384, 256, pool=True)
        for m in self.modules():  # as ConvEncoder.reset_parameters (DeepCluster's init)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        wanted = select_taps(self.taps, names)
        last = max((self.taps.index(n) for n in wanted), default=-1)
        out: dict[str, Tensor] = {}
        if last < 0:
            return out
        x = self.scattering(x)
        if "conv2" in wanted:
            out["conv2"] = x
        for name in self.taps[1:last + 1]:
            block = getattr(self, name)
            if name == "conv3":
                x = block.norm(block.prepool2(block.prepool1(x)))
            x = block.relu(block.bn(block.conv(x)))
            if name in wanted:
                out[name] = x  # post-activation, pre-pool, as ConvEncoder's taps
            if hasattr(block, "pool"):
                x = block.pool(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.conv5(self.conv4(self.conv3(self.scattering(x))))

    def first_layer_weight(self) -> None:
        return None

    def tap_module(self, name: str) -> nn.Module:
        select_taps(self.taps, [name])
        return self.scattering if name == "conv2" else getattr(self, name)

    def for_probing(self) -> ScatteringAlexNet:
        """BatchNorm after conv3..conv5 folded into the convolutions; conv3's input normalisation stays as it is
        (it precedes the convolution; in eval mode it is the fixed per-channel map of its running statistics)."""
        return fold_batchnorm(self, [(f"{name}.conv", f"{name}.bn") for name in self.taps[1:]])


@register_encoder("scattering")
def scattering(input_size: int = 224) -> ScatteringEncoder:
    """Scattering transform J=2, L=8, order 2 (Oyallon et al. 2017), 224 px input: taps conv1 (orders 0-1), conv2."""
    return ScatteringEncoder(input_size)


@register_encoder("scattering-cifar")
def scattering_cifar(input_size: int = 32) -> ScatteringEncoder:
    """The same scattering transform at CIFAR's 32 px (maps of 8 x 8)."""
    return ScatteringEncoder(input_size)


@register_encoder("scattering-alexnet", head=alexnet_classifier)
def scattering_alexnet(input_size: int = 224) -> ScatteringAlexNet:
    """Fixed scattering (tap conv2) + AlexNet conv3..conv5 + AlexNet's head: Table 4's "Scattering" network."""
    return ScatteringAlexNet(input_size)
