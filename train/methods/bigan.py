"""BiGAN (Donahue et al., 2017): an encoder E, a generator G and a joint discriminator D(x, z).

D learns to tell (x, E(x)) from (G(z), z); E and G learn to fool it, which makes E an approximate inverse of
G and its features a representation. Following the paper's ImageNet setup the encoder sees 112 px crops, the
generator and the discriminator work at 64 px (the real crop is downsampled for D); leaky ReLU in the
encoder (GAN style). Native augmentation: random (non-scaled) crops and horizontal flips. Optimiser: Adam,
lr 2e-4, beta1 0.5, weight decay 2.5e-5, batch 128; the rate is constant for half the epochs and then decays
linearly to 0.

For ``--arch cifar`` the encoder sees 32 px and G and D work at 32 px.

On a real image set (``KIND:PATH``) the loader workers resize each image's shorter side to 128 and keep the centre
128 px square (``real_input_scale``); the random 112 crop and flip run on the device: the BiGAN ImageNet loader
(Donahue et al., 2017, section 4.3 and github.com/jeffdonahue/bigan: images resized to 128, random 112 crops,
flips). CIFAR-scale encoders take the 32 px images as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import OptionError
from common.options import opt
from train.augment import views
from train.data.sources import Batch
from train.methods import register_method
from train.methods.base import Method, MethodOptions, RunContext, check_gan_size, linear_decay_schedule
from train.models import build_encoder, output_shape
from train.models.gan import DCGANGenerator, JointDiscriminator


def _output_size(encoder: nn.Module, size: int) -> int:
    """Side of the encoder's output map for a ``size`` px input; 0 where its layers cannot take that input."""
    try:
        return int(output_shape(encoder, size)[-1])
    except RuntimeError:  # torch: the kernel is larger than the (padded) input at some layer
        return 0


def bigan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """D's loss: (x, E(x)) pairs are 'real' (1), (G(z), z) pairs 'fake' (0)."""
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def bigan_eg_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E and G's loss: the labels swapped (the non-saturating form of the minimax game)."""
    return (F.binary_cross_entropy_with_logits(d_real, torch.zeros_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake)))


@dataclass
class BiGANOptions(MethodOptions):
    lr: float = opt(2e-4, "Adam learning rate (E, G and D)", min=0, min_open=True)
    weight_decay: float = opt(2.5e-5, "weight decay", min=0)
    beta1: float = opt(0.5, "Adam beta1", min=0, max=1, max_open=True)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1, max_open=True)
    z_dim: int = opt(200, "latent dimensions", min=1)
    encoder_size: int = opt(0, "encoder input size (0: 112 for AlexNet, 32 for cifar); at least the GAN size and "
                               "what the architecture's layers need", min=8, auto=0)
    gan_size: int = opt(0, "generator / discriminator image size, a power of two (0: 64 for AlexNet, 32 for "
                           "cifar)", min=8, auto=0)
    g_width: int = opt(64, "generator width (channels of its last hidden layer)", min=1)
    d_width: int = opt(64, "discriminator conv width", min=1)
    d_hidden: int = opt(1024, "discriminator MLP width", min=1)
    flip: bool = opt(True, "random horizontal flips (native augmentation)")

    def check(self) -> None:
        check_gan_size(self.gan_size)


@register_method
class BiGAN(Method):
    name = "bigan"
    Options = BiGANOptions
    summary = "BiGAN (Donahue et al., 2017): an encoder E, a generator G and a joint discriminator D(x, z)."
    examples = ("train bigan shards/mono-a-128 --out runs/bigan-mono-a",)
    default_arch = "alexnet"
    default_epochs = 200
    default_batch_size = 128
    small_options = {"g_width": 16, "d_width": 16, "d_hidden": 64, "z_dim": 32}

    @classmethod
    def real_input_scale(cls, input_size: int) -> int:
        """128 px for the ImageNet-scale encoder (BiGAN's loader: resize to 128, crop 112), else its own size."""
        return input_size if input_size <= 64 else 128
    encoder_kwargs = {"leaky_relu": True}

    def __init__(self, opts: BiGANOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.enc_size, self.gan_size = self.sizes(opts, self.encoder.input_size)
        feat_dim = math.prod(output_shape(self.encoder, self.enc_size))
        self.to_z = nn.Linear(feat_dim, opts.z_dim)
        self.generator = DCGANGenerator(opts.z_dim, self.gan_size, opts.g_width)
        self.discriminator = JointDiscriminator(opts.z_dim, self.gan_size, opts.d_width, opts.d_hidden)

    @staticmethod
    def sizes(opts: BiGANOptions, design_size: int) -> tuple[int, int]:
        """(encoder input size, GAN image size): those given, else BiGAN's 112 / 64 for the ImageNet-scale
        encoders and the encoder's own size (32 / 32) for the CIFAR one."""
        small = design_size <= 64
        return opts.encoder_size or (design_size if small else 112), opts.gan_size or (32 if small else 64)

    @classmethod
    def check_options(cls, opts: BiGANOptions, arch: str) -> None:
        encoder = build_encoder(arch, **cls.encoder_kwargs)
        enc_size, gan_size = cls.sizes(opts, encoder.input_size)
        if enc_size < gan_size:  # D would see the encoder's crop upsampled beside G's full-resolution images
            raise OptionError(f"Invalid value for '--encoder-size': {enc_size} is below the GAN size {gan_size} "
                              f"(--gan-size); the discriminator would see real images upsampled.")
        if _output_size(encoder, enc_size) == 0:
            least = next(s for s in range(enc_size + 1, 4 * encoder.input_size) if _output_size(encoder, s))
            raise OptionError(f"Invalid value for '--encoder-size': {enc_size} is too small for the {arch} "
                              f"encoder, whose layers need at least {least} px.")

    def configure(self, ctx: RunContext) -> None:
        o: BiGANOptions = self.opts
        eg = [*self.encoder.parameters(), *self.to_z.parameters(), *self.generator.parameters()]
        kw = dict(lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        self.optimizers["eg"] = torch.optim.Adam(eg, **kw)
        self.optimizers["d"] = torch.optim.Adam(self.discriminator.parameters(), **kw)
        epochs = ctx.total_epochs
        for name in ("eg", "d"):
            half = epochs // 2
            self.schedulers[name] = linear_decay_schedule(self.optimizers[name], half, epochs - half)

    @property
    def input_size(self) -> int:
        return self.enc_size

    def encode(self, x: Tensor) -> Tensor:
        return self.to_z(self.encoder(self.prepare(x)).flatten(1))

    def views(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(encoder view at enc_size, the same crop at gan_size for D)."""
        x = views.random_crop(views.to_unit_range(images), self.enc_size,
                                flip_p=0.5 if self.opts.flip else 0.0, generator=generator)
        return x, views.resize(x, self.gan_size)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """The encoder's view and the discriminator's copy of it."""
        return list(self.views(images, generator))

    def sample_z(self, n: int, generator: torch.Generator) -> Tensor:
        # Uniform(-1, 1) latents as in BiGAN.
        # non_blocking: a plain copy from pageable memory waits for the GPU's queued work (a sync every step)
        return (torch.rand(n, self.opts.z_dim, generator=generator) * 2 - 1).to(self.device, non_blocking=True)

    def d_step(self, x_enc: Tensor, x_gan: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            ex = self.encode(x_enc)
            gz = self.generator(z)
        loss = bigan_d_loss(self.discriminator(x_gan, ex).float(), self.discriminator(gz, z).float())
        self.optimizer_step("d", loss)
        return loss.detach()

    def eg_step(self, x_enc: Tensor, x_gan: Tensor, z: Tensor) -> Tensor:
        loss = bigan_eg_loss(self.discriminator(x_gan, self.encode(x_enc)).float(),
                             self.discriminator(self.generator(z), z).float())
        self.optimizer_step("eg", loss)
        return loss.detach()

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x_enc, x_gan = self.views(batch.images, generator)
        z = self.sample_z(len(batch), generator)
        loss_d = self.d_step(x_enc, x_gan, z)
        loss_eg = self.eg_step(x_enc, x_gan, z)
        return {"loss": loss_d + loss_eg, "loss_d": loss_d, "loss_eg": loss_eg}
