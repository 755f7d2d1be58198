"""MonoGAN: the paper's CIFAR-scale ablation network, a WGAN with gradient penalty (Gulrajani et al., 2017).

Critic = the encoder (four convolutions, kernels 7, 5, 3, 3, strides 3, 2, 2, 1; leaky ReLU) plus one linear
layer; generator = a DCGAN-style 32x32 network (transposed convolutions; ``--g-upsampling resize`` swaps them for
nearest resize + 3x3 convolution, whose fakes carry no checkerboard for the critic's conv1 to specialise on).
The critic is updated every step, the generator every ``n_critic`` (5) steps, so each critic update sees a fresh
real batch as in WGAN-GP's algorithm. Adam lr 1e-4, betas (0.5, 0.9), penalty weight lambda 10, batch 64,
learning rate decayed linearly to 0 over ``--epochs`` (per epoch; a run cut short by ``--max-steps`` stops
part-way down the ramp, e.g. at 62% of the initial rate after the quick preset's 6,000 steps of 156 per epoch).
Native augmentation: horizontal flips only (the rendered patches already carry the paper's augmentation).

On a real image set (``KIND:PATH``) the loader workers bring each image to the encoder's input size (shorter side
resized, centre square kept; ``real_input_scale``): CIFAR's 32 px images as they are, which is how the paper's
"GAN trained on CIFAR-10" row (Table 3) saw its data (WGAN-GP's CIFAR-10 loader: the 32 px images, no
augmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.options import opt
from train.augment import views
from train.data.sources import Batch
from train.methods import register_method
from train.methods.base import Method, MethodOptions, RunContext, check_gan_size, linear_decay_schedule
from train.models import output_shape
from train.models.gan import GENERATOR_UPSAMPLING, DCGANGenerator


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """WGAN-GP's penalty: E[(||grad_x critic(x_hat)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake.

    ``eps`` has shape (B,) (one mixing weight per sample). ``create_graph=True`` so the penalty itself can be
    differentiated w.r.t. the critic's parameters.
    """
    e = eps.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(c_real: Tensor, c_fake: Tensor) -> Tensor:
    """Critic minimises E[c(fake)] - E[c(real)] (the negative Wasserstein estimate)."""
    return c_fake.mean() - c_real.mean()


def generator_loss(c_fake: Tensor) -> Tensor:
    return -c_fake.mean()


class Critic(nn.Module):
    """The encoder plus one linear layer. Its BatchNorm layers never use batch statistics: they stay in eval mode
    with their initial statistics (mean 0, variance 1), i.e. a learned per-channel affine map.

    WGAN-GP's penalty is per sample and assumes each output depends on its own input only; with batch statistics
    the critic tells real from fake batches by their statistics, which the penalty cannot see (Gulrajani et al.,
    2017, sec. 4: "no critic batch normalization"). Measured here: with batch statistics the Wasserstein estimate
    climbed past 180 within 450 steps while the penalty fell to 0.05, beyond what any 1-Lipschitz critic can reach
    on images in [-1, 1]. Keeping the BatchNorm modules keeps the architecture the probes expect (BN absorbed).

    ``batch_stats=True`` gives the plain AlexNet-BN critic back (batch statistics in training), for comparison.
    """

    def __init__(self, encoder: nn.Module, feat_dim: int, batch_stats: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(feat_dim, 1)
        self.batch_stats = batch_stats

    def train(self, mode: bool = True) -> Critic:
        super().train(mode)
        if not self.batch_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.encoder(x).flatten(1)).squeeze(1)


@dataclass
class MonoGANOptions(MethodOptions):
    lr: float = opt(1e-4, "Adam learning rate (critic and generator)", min=0, min_open=True)
    weight_decay: float = opt(0.0, "weight decay", min=0)
    beta1: float = opt(0.5, "Adam beta1", min=0, max=1, max_open=True)
    beta2: float = opt(0.9, "Adam beta2", min=0, max=1, max_open=True)
    n_critic: int = opt(5, "critic updates per generator update", min=1)
    gp_lambda: float = opt(10.0, "gradient-penalty weight", min=0)
    z_dim: int = opt(128, "latent dimensions", min=1)
    g_width: int = opt(128, "generator width (WGAN-GP's DIM)", min=1)
    g_upsampling: str = opt("transposed", "generator upsampling: transposed (4x4/2 transposed convolutions, "
                                          "WGAN-GP's) | resize (nearest resize + 3x3 convolution, no checkerboard)",
                            choices=GENERATOR_UPSAMPLING)
    gan_size: int = opt(0, "generator output size, a power of two (0: the encoder's input size if a power of two, "
                           "else 64)", min=8, auto=0)
    flip: bool = opt(True, "random horizontal flips")
    decay: bool = opt(True, "decay the learning rate linearly to 0 over the epochs")
    critic_bn: str = opt("fixed", "critic BatchNorm: fixed (initial statistics, a per-channel affine; WGAN-GP's "
                                  "per-sample penalty holds) | batch (batch statistics, a plain AlexNet-BN critic)",
                         choices=("fixed", "batch"))

    def check(self) -> None:
        check_gan_size(self.gan_size)


@register_method
class MonoGAN(Method):
    name = "monogan"
    Options = MonoGANOptions
    summary = ("MonoGAN: the paper's CIFAR-scale ablation network, a WGAN with gradient penalty (Gulrajani et al., "
               "2017).")
    examples = ("train monogan shards/cifar-b --out runs/monogan-b --n-critic 5 --gp-lambda 10",)
    default_arch = "cifar"
    default_epochs = 100
    default_batch_size = 64
    small_options = {"g_width": 16, "z_dim": 32}

    @classmethod
    def real_input_scale(cls, input_size: int) -> int:
        """The encoder's own input size (32 px for the CIFAR-scale critic): WGAN-GP's loader takes CIFAR as is."""
        return input_size
    encoder_kwargs = {"leaky_relu": True}

    def __init__(self, opts: MonoGANOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        size = self.encoder.input_size
        self.gan_size = opts.gan_size or (size if size & (size - 1) == 0 else 64)
        self.critic = Critic(self.encoder, math.prod(output_shape(self.encoder)),
                             batch_stats=opts.critic_bn == "batch")
        self.generator = DCGANGenerator(opts.z_dim, self.gan_size, opts.g_width, opts.g_upsampling)
        self.steps_done = 0

    def configure(self, ctx: RunContext) -> None:
        o: MonoGANOptions = self.opts
        kw = dict(lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        self.optimizers["critic"] = torch.optim.Adam(self.critic.parameters(), **kw)
        self.optimizers["g"] = torch.optim.Adam(self.generator.parameters(), **kw)
        epochs = ctx.total_epochs if o.decay else 0
        for name in ("critic", "g"):
            self.schedulers[name] = linear_decay_schedule(self.optimizers[name], 0 if o.decay else 1, epochs)

    def train(self, mode: bool = True) -> MonoGAN:
        super().train(mode)
        self.critic.train(mode)  # the encoder is also a direct child: re-apply the critic's fixed statistics last
        return self

    def to_critic(self, x: Tensor) -> Tensor:
        """Generated images at the critic's input size (identity at 32 px)."""
        return views.resize(x, self.input_size) if x.shape[-1] != self.input_size else x

    def real_view(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = views.resize(views.to_unit_range(images), self.input_size)
        if self.opts.flip:
            flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device, non_blocking=True)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return [self.real_view(images, generator)]

    def sample_z(self, n: int, generator: torch.Generator) -> Tensor:
        # non_blocking: a plain copy from pageable memory waits for the GPU's queued work (a sync every step)
        return torch.randn(n, self.opts.z_dim, generator=generator).to(self.device, non_blocking=True)

    def critic_step(self, real: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        n = real.shape[0]
        z = self.sample_z(n, generator)
        with torch.no_grad():
            fake = self.to_critic(self.generator(z))
        eps = torch.rand(n, generator=generator).to(self.device, non_blocking=True)
        real, fake = self.prepare(real), self.prepare(fake)
        w = critic_loss(self.critic(real).float(), self.critic(fake).float())
        gp = gradient_penalty(self.critic, real, fake, eps)
        loss = w + self.opts.gp_lambda * gp
        self.optimizer_step("critic", loss)
        return {"loss_critic": loss.detach(), "wasserstein": -w.detach(), "gp": gp.detach()}

    def generator_step(self, n: int, generator: torch.Generator) -> Tensor:
        z = self.sample_z(n, generator)
        loss = generator_loss(self.critic(self.prepare(self.to_critic(self.generator(z)))).float())
        self.optimizer_step("g", loss, self.generator.parameters())
        return loss.detach()

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        out = self.critic_step(self.real_view(batch.images, generator), generator)
        self.steps_done += 1
        if self.steps_done % self.opts.n_critic == 0:
            out["loss_g"] = self.generator_step(len(batch), generator)
        out["loss"] = out["loss_critic"]
        return out

    def extra_state(self) -> dict:
        return {"steps_done": self.steps_done}

    def load_extra_state(self, state: dict) -> None:
        self.steps_done = int(state.get("steps_done", 0))
