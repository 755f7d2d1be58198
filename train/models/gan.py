"""Generators and discriminators for the generative methods (BiGAN, MonoGAN)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_size(size: int) -> int:
    n = int(round(math.log2(size)))
    if 2**n != size or size < 8:
        raise ValueError(f"GAN image size must be a power of two >= 8, got {size}")
    return n


GENERATOR_UPSAMPLING = ("transposed", "resize")


def upsample_block(in_ch: int, out_ch: int, mode: str, bias: bool) -> list[nn.Module]:
    """Double the resolution: a 4x4/2 transposed convolution (DCGAN), or a nearest-neighbour resize then a 3x3
    convolution (Odena et al., 2016), which cannot paint the period-2 checkerboard a transposed convolution can."""
    if mode == "transposed":
        return [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=bias)]
    if mode == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)]
    raise ValueError(f"generator upsampling must be one of {', '.join(GENERATOR_UPSAMPLING)}, not {mode!r}")


class DCGANGenerator(nn.Module):
    """z -> 4x4 map -> upsampling blocks doubling the size -> ``size`` x ``size`` RGB in (-1, 1) (tanh).

    At 32 px with ``width=128`` and transposed convolutions this is the WGAN-GP paper's CIFAR generator (Linear to
    4x4x4W, then 2W, W, 3).
    """

    def __init__(self, z_dim: int = 128, size: int = 32, width: int = 128, upsampling: str = "transposed") -> None:
        super().__init__()
        n_up = _check_size(size) - 2  # 4 -> size
        ch = width * 2 ** (n_up - 1)
        self.z_dim, self.size, self.start_ch = z_dim, size, ch
        self.fc = nn.Sequential(
            nn.Linear(z_dim, 4 * 4 * ch, bias=False), nn.BatchNorm1d(4 * 4 * ch), nn.ReLU(True)
        )
        ups: list[nn.Module] = []
        for i in range(n_up):
            last = i == n_up - 1
            out = 3 if last else ch // 2
            ups += upsample_block(ch, out, upsampling, bias=last)
            if not last:
                ups += [nn.BatchNorm2d(out), nn.ReLU(True)]
            ch = out
        ups.append(nn.Tanh())
        self.net = nn.Sequential(*ups)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(z.shape[0], self.start_ch, 4, 4))


class ConvFeatures(nn.Module):
    """DCGAN discriminator trunk: stride-2 convs with leaky ReLU down to 4x4, flattened."""

    def __init__(self, size: int = 64, width: int = 64) -> None:
        super().__init__()
        n_down = _check_size(size) - 2
        layers: list[nn.Module] = []
        ch_in, ch = 3, width
        for i in range(n_down):
            layers.append(nn.Conv2d(ch_in, ch, 4, 2, 1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2, True))
            ch_in, ch = ch, ch * 2
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = ch_in * 16

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class JointDiscriminator(nn.Module):
    """BiGAN's D(x, z): a conv trunk on x and an MLP on z, joined by an MLP to one logit.

    Dropout (0.2) on the joint layers as in Donahue et al.'s discriminator, which keeps D from overpowering
    E and G early on.
    """

    def __init__(self, z_dim: int, size: int = 64, width: int = 64, hidden: int = 1024) -> None:
        super().__init__()
        self.x_net = ConvFeatures(size, width)
        self.z_net = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2, True), nn.Dropout(0.2),
                                   nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, True))
        self.joint = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.x_net.out_dim + hidden, hidden),
                                   nn.LeakyReLU(0.2, True), nn.Dropout(0.2), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.joint(torch.cat([self.x_net(x), self.z_net(z)], dim=1)).squeeze(1)
