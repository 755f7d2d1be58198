"""The convolutional encoders of the paper: AlexNet-BN (two widths) and the CIFAR-scale MonoGAN encoder.

The layer specs follow the DeepCluster / linear-probes AlexNet (``(out, kernel, stride, pad)``, max-pool 3x3/2
after conv1, conv2 and conv5). With a 224 px input the spatial sizes are 55 -> 27 -> 13 -> 13 -> 13 -> 6, so
the final map is 256 x 6 x 6 as in the original classifiers.

The CIFAR encoder has no published channel counts; we use AlexNet's 96-256-384-384 with paddings 2, 2, 1, 1,
which on 32 px gives maps of 10, 5, 3, 3: conv1 is then 96 x 10 x 10 = 9,600 dimensions, the size the paper's
probes use, and no pooling is needed (the paper probes CIFAR "without dimensionality reduction").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.models.contract import output_shape, select_taps
from train.models.folding import fold_batchnorm
from train.models.heads import alexnet_classifier
from train.models.registry import register_encoder


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int
    padding: int
    pool: bool = False  # max-pool 3x3 / 2 after the activation


ALEXNET_SPEC = (
    ConvSpec(96, 11, 4, 2, pool=True),
    ConvSpec(256, 5, 1, 2, pool=True),
    ConvSpec(384, 3, 1, 1),
    ConvSpec(384, 3, 1, 1),
    ConvSpec(256, 3, 1, 1, pool=True),
)
# RotNet's narrower AlexNet (as in the DeepCluster / linear-probes 'small' config).
ALEXNET_SMALL_SPEC = (
    ConvSpec(64, 11, 4, 2, pool=True),
    ConvSpec(192, 5, 1, 2, pool=True),
    ConvSpec(384, 3, 1, 1),
    ConvSpec(256, 3, 1, 1),
    ConvSpec(256, 3, 1, 1, pool=True),
)
CIFAR_SPEC = (
    ConvSpec(96, 7, 3, 2),
    ConvSpec(256, 5, 2, 2),
    ConvSpec(384, 3, 2, 1),
    ConvSpec(384, 3, 1, 1),
)

LEAKY_SLOPE = 0.2  # the usual GAN-critic / BiGAN slope


class Sobel(nn.Module):
    """Fixed grayscale + Sobel (x, y) filtering, DeepCluster's optional input transform: 3 -> 2 channels.

    The filters are non-persistent buffers: they are constants, so they stay out of the state dict and an
    ``encoder.pt`` never depends on them.
    """

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        weight = torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        gray = x.mean(dim=1, keepdim=True)
        return nn.functional.conv2d(gray, self.weight.to(gray.dtype), padding=1)


class ConvEncoder(nn.Module):
    """conv -> BN -> (leaky) ReLU [-> max-pool] blocks named ``conv1``..``convN``; implements the encoder contract
    (:class:`train.models.contract.TapEncoder`).

    The taps are the blocks' post-activation, pre-pool outputs (what the linear probes read); ``forward`` returns
    the output of the last block (after its pool, where it has one). ``tap_module(name)`` is the block itself.
    """

    def __init__(
        self,
        spec: tuple[ConvSpec, ...],
        *,
        in_channels: int = 3,
        leaky_relu: bool = False,
        sobel: bool = False,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.input_size = input_size  # the resolution the network was designed for
        self.input_channels = in_channels  # RGB in, also with the Sobel front end (which feeds conv1 2 channels)
        self.sobel = Sobel() if sobel else None
        channels = 2 if sobel else in_channels
        if sobel and in_channels != 3:
            raise ValueError("sobel=True takes RGB input and feeds 2 channels to conv1; "
                             "leave in_channels at 3")
        names = []
        for i, s in enumerate(spec, start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            layers["conv"] = nn.Conv2d(channels, s.out_channels, s.kernel, s.stride, s.padding)
            layers["bn"] = nn.BatchNorm2d(s.out_channels)
            # inplace activations would overwrite the tensors forward_taps hands out when a pool follows.
            layers["relu"] = nn.LeakyReLU(LEAKY_SLOPE) if leaky_relu else nn.ReLU()
            if s.pool:
                layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2)
            name = f"conv{i}"
            self.add_module(name, nn.Sequential(layers))
            names.append(name)
            channels = s.out_channels
        self.taps: tuple[str, ...] = tuple(names)
        self.out_channels = channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DeepCluster's init: N(0, sqrt(2 / (k*k*out))) == Kaiming fan_out; BN at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _blocks(self) -> list[tuple[str, nn.Sequential]]:
        return [(name, getattr(self, name)) for name in self.taps]

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Post-activation (after ReLU, before pool) outputs of the requested blocks, by name.

        Stops after the deepest requested block, so tapping conv1 does not pay for conv5.
        """
        wanted = select_taps(self.taps, names)
        last = max(self.taps.index(n) for n in wanted) if wanted else -1
        out: dict[str, Tensor] = {}
        if self.sobel is not None:
            x = self.sobel(x)
        for i, (name, block) in enumerate(self._blocks()):
            if i > last:
                break
            x = block.relu(block.bn(block.conv(x)))
            if name in wanted:
                out[name] = x
            if hasattr(block, "pool"):
                x = block.pool(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.sobel is not None:
            x = self.sobel(x)
        for _, block in self._blocks():
            x = block(x)
        return x

    def first_layer_weight(self) -> Tensor:
        """conv1's weights as trained (BatchNorm not folded in: its per-channel scale would be normalised away in
        a picture anyway, and a negative BN scale would flip the picture of a filter)."""
        return self.tap_module(self.taps[0]).conv.weight

    def tap_module(self, name: str) -> nn.Sequential:
        """The block producing tap ``name`` (conv, bn, relu and the pool after the tap)."""
        select_taps(self.taps, [name])
        return getattr(self, name)

    def for_probing(self) -> ConvEncoder:
        """An eval-mode copy with each block's BatchNorm folded into its convolution (``bn`` -> Identity)."""
        return fold_batchnorm(self, [(f"{name}.conv", f"{name}.bn") for name in self.taps])

    def output_shape(self, input_size: int | None = None) -> tuple[int, int, int]:
        """(C, H, W) of ``forward`` for a square input (default: the design resolution)."""
        return output_shape(self, input_size)  # type: ignore[return-value]


@register_encoder("alexnet", head=alexnet_classifier)
def alexnet(in_channels: int = 3, leaky_relu: bool = False, sobel: bool = False) -> ConvEncoder:
    """AlexNet with BatchNorm, 96-256-384-384-256, 224 px input (the paper's ImageNet network)."""
    return ConvEncoder(ALEXNET_SPEC, in_channels=in_channels, leaky_relu=leaky_relu, sobel=sobel,
                       input_size=224)


@register_encoder("alexnet-small", head=alexnet_classifier)
def alexnet_small(in_channels: int = 3, leaky_relu: bool = False, sobel: bool = False) -> ConvEncoder:
    """RotNet's narrower AlexNet-BN, 64-192-384-256-256, 224 px input."""
    return ConvEncoder(ALEXNET_SMALL_SPEC, in_channels=in_channels, leaky_relu=leaky_relu, sobel=sobel,
                       input_size=224)


@register_encoder("cifar")
def cifar(in_channels: int = 3, leaky_relu: bool = False, sobel: bool = False) -> ConvEncoder:
    """The MonoGAN critic's encoder: four convs (7/3, 5/2, 3/2, 3/1), 96-256-384-384, 32 px input."""
    return ConvEncoder(CIFAR_SPEC, in_channels=in_channels, leaky_relu=leaky_relu, sobel=sobel, input_size=32)
