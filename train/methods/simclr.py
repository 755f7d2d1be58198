"""SimCLR (Chen, Kornblith, Norouzi and Hinton, ICML 2020): two views of each image, a projection MLP, NT-Xent.

Defaults, from the authors' CIFAR-10 recipe where they give one (the paper's appendix B.9 and the command in their
repository's README, google-research/simclr): the ResNet CIFAR stem, temperature 0.5, the augmentation without Gaussian
blur and with colour jitter of strength 0.5 (random-resized crop, flip, jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8,
greyscale 0.2: :func:`train.augment.multiview.simclr_views`; ImageNet's strength 1 and blur from 64 px), a projection
head g of one hidden layer (2048 units, BatchNorm, ReLU) to 128 dimensions on the pooled backbone feature, a 10-epoch
linear warm-up and a cosine decay per iteration, weight decay 1e-6, learning rate 0.3 x batch / 256 (appendix B.1's
linear rule).

The optimiser is SGD with momentum 0.9, not the paper's LARS: LARS serves the batches of 4,096-8,192 the paper
trains with, torch has no LARS, and this project trains CIFAR-sized sets at batch 256 or less; the rate is the
paper's rule, untuned for SGD (``--lr``).

Both views go through the network as one batch (the paper's code concatenates them too), so BatchNorm sees the 2N
views together and DistributedDataParallel sees one forward per step. Under torchrun the negatives are the local
batch's (the paper gathers them across its TPU cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.options import opt
from train.augment.multiview import ViewSpec, simclr_views
from train.data.sources import Batch
from train.losses import nt_xent_loss
from train.methods import register_method
from train.methods.multiview_base import MultiViewMethod, MultiViewOptions
from train.models.heads import projection_mlp


@dataclass
class SimCLROptions(MultiViewOptions):
    lr: float = opt(0.3, "learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    weight_decay: float = opt(1e-6, "weight decay", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    warmup_epochs: float = opt(10.0, "epochs of linear learning-rate warm-up from 0 (then a cosine to 0)", min=0)
    temperature: float = opt(0.5, "NT-Xent temperature", min=0, min_open=True)
    proj_hidden: int = opt(2048, "hidden units of the projection head", min=1)
    proj_dim: int = opt(128, "output dimensions of the projection head", min=1)
    blur: str = opt("auto", "Gaussian blur with p = 0.5 (auto: only for inputs of 64 px or more)",
                    choices=("auto", "on", "off"))
    jitter_strength: float = opt(0.0, "colour-jitter strength s: (0.8 s, 0.8 s, 0.8 s, 0.2 s) with p = 0.8 (0: 0.5 "
                                      "below 64 px, the authors' CIFAR-10 command, else 1.0)", min=0, min_open=True,
                                 auto=0)


@register_method
class SimCLR(MultiViewMethod):
    name = "simclr"
    Options = SimCLROptions
    summary = ("SimCLR (Chen et al., 2020): two augmented views of each image, a projection MLP and the NT-Xent "
               "contrastive loss; CIFAR-10 recipe (temperature 0.5, no blur, jitter strength 0.5), SGD.")
    examples = ("train simclr shards/mono-b --out runs/simclr-mono-b",
                "train simclr shards/mono-b --out runs/simclr-vit --arch vit-tiny --batch-size 128")
    small_options = {"proj_hidden": 32, "proj_dim": 16, "warmup_epochs": 0.05}

    def __init__(self, opts: SimCLROptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.projector = projection_mlp(self.feature_dim, opts.proj_hidden, opts.proj_dim)

    def make_optimizer(self) -> torch.optim.Optimizer:
        o: SimCLROptions = self.opts
        return torch.optim.SGD(self.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def view_specs(self) -> list[ViewSpec]:
        o: SimCLROptions = self.opts
        return simclr_views(self.input_size, blur=None if o.blur == "auto" else o.blur == "on",
                            strength=o.jitter_strength or None)

    def forward(self, views: Tensor) -> Tensor:
        return self.projector(self.features(views))

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        self.apply_schedules(len(batch))
        first, second = self.views(batch.images, generator)
        z = self.replicated(torch.cat([first, second])).float()
        loss = nt_xent_loss(z[: len(first)], z[len(first):], self.opts.temperature)
        self.optimizer_step("main", loss)
        return {"loss": loss.detach()}
