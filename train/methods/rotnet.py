"""RotNet (Gidaris et al., 2018): predict which of four rotations (0, 90, 180, 270 degrees) was applied.

Native augmentation (paper, section 3.2): a non-scaled random crop to the network's input size (224 from the
256 px renders) and a horizontal flip; every image of the batch then appears at all four rotations.
Optimiser defaults follow the RotNet AlexNet config: SGD, lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4,
batch 192, 30 epochs with the rate multiplied by 0.2 at epochs 10, 20 and 25.

On a real image set (``KIND:PATH``) the loader workers resize each image's shorter side to 256 and keep the centre
256 px square (``real_input_scale``), and the random 224 crop and flip run on the device as for rendered patches:
the RotNet ImageNet loader (github.com/gidariss/FeatureLearningRotNet, dataloader.py: ``Scale(256)``,
``RandomCrop(224)``, ``RandomHorizontalFlip``), whose crop may also slide along the long side, which a stacked
square cannot hold. CIFAR-scale encoders take the 32 px images as they are (RotNet's CIFAR loader: no resize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from common.options import opt
from train.augment import views
from train.data.sources import Batch
from train.methods import register_method
from train.methods.base import Method, MethodOptions, RunContext, sgd, step_schedule
from train.models import output_shape
from train.models.heads import classifier_head


def rotation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


@dataclass
class RotNetOptions(MethodOptions):
    lr: float = opt(0.1, "SGD learning rate", min=0, min_open=True)
    weight_decay: float = opt(5e-4, "weight decay", min=0)
    # Nesterov momentum needs a momentum above 0 (torch refuses 0)
    momentum: float = opt(0.9, "SGD momentum (Nesterov)", min=0, max=1, min_open=True, max_open=True)
    milestones: list = opt([10, 20, 25], "epochs at which the learning rate is multiplied by --gamma (strictly "
                                         "increasing)", min=0, increasing=True)
    gamma: float = opt(0.2, "learning-rate factor at each milestone", min=0, max=1, min_open=True)
    head_dim: int = opt(4096, "width of the two fully connected layers (0: linear classifier on the map)", min=0)
    flip: bool = opt(True, "random horizontal flips (native augmentation)")


@register_method
class RotNet(Method):
    name = "rotnet"
    Options = RotNetOptions
    summary = ("RotNet (Gidaris et al., 2018): predict which of four rotations (0, 90, 180, 270 degrees) was "
               "applied.")
    examples = ("train rotnet shards/mono-a --out runs/rot-mono-a --batch-size 192",)
    default_arch = "alexnet"
    default_epochs = 30
    default_batch_size = 192
    gradient_sync = "ddp"  # one optimiser, one backward per step
    small_options = {"head_dim": 64}

    @classmethod
    def real_input_scale(cls, input_size: int) -> int:
        """256 px for a 224 px network (RotNet's ImageNet loader: resize to 256, random crop 224), else its size."""
        return input_size if input_size <= 64 else round(input_size * 256 / 224)

    def __init__(self, opts: RotNetOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        feat_dim = math.prod(output_shape(self.encoder))
        if opts.head_dim > 0:
            self.head = classifier_head(feat_dim, opts.head_dim, 4, batchnorm=True)
        else:
            self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(feat_dim, 4))

    def configure(self, ctx: RunContext) -> None:
        o: RotNetOptions = self.opts
        self.optimizers["main"] = sgd(self.parameters(), o, momentum=o.momentum, nesterov=True)
        self.schedulers["main"] = step_schedule(self.optimizers["main"], o.milestones, o.gamma)

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = views.to_unit_range(images)
        return views.random_crop(x, self.input_size, flip_p=0.5 if self.opts.flip else 0.0,
                                   generator=generator)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """The crop, then its copies at 90, 180 and 270 degrees: what the network classifies."""
        x, _ = views.rotate_batch(self.augment(images, generator))
        return list(x.chunk(4))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.prepare(x)))

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x, y = views.rotate_batch(self.augment(batch.images, generator))
        logits = self.replicated(x)
        loss = rotation_loss(logits.float(), y)
        self.optimizer_step("main", loss)
        acc = (logits.argmax(1) == y).float().mean()
        return {"loss": loss.detach(), "acc": acc.detach()}

    @torch.no_grad()
    def rotation_accuracy(self, images: Tensor) -> float:
        """Accuracy on all four rotations of centre views of ``images`` (uint8), in eval mode."""
        was = self.training
        self.eval()
        x = views.center_crop_resize(views.to_unit_range(images.to(self.device)), self.input_size,
                                       crop_fraction=min(1.0, self.input_size / images.shape[-1]))
        x, y = views.rotate_batch(x)
        acc = (self(x).argmax(1) == y).float().mean().item()
        self.train(was)
        return acc
