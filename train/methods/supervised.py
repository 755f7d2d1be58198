"""The full-supervision baseline: the same encoder trained with labels on a labelled set.

Data: CIFAR-10/100 (pickle layout) or an ImageFolder tree (``root/train/<class>/*.jpg`` or
``root/<class>/...``). Augmentation: ImageNet-style random resized crops and flips for the AlexNets (the
loader hands over images at 256 px), CIFAR's pad-4 random crop and flip for the cifar encoder. Optimiser:
torchvision's AlexNet recipe, SGD lr 0.01, momentum 0.9, weight decay 5e-4, 90 epochs with the rate divided
by 10 every 30 epochs.

Its ``encoder.pt`` carries the classifier (``train.models.encoder_io.attach_classifier``: the head's layers and weights,
loadable with ``weights_only=True``), so the run is a teacher for ``train distill`` and ``probe classify`` scores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.options import opt
from train.augment import views
from train.data.sources import Batch
from train.methods import register_method
from train.methods.base import Method, MethodOptions, RunContext, sgd, step_schedule
from train.models import output_shape
from train.models.encoder_io import attach_classifier
from train.models.heads import classifier_head


@dataclass
class SupervisedOptions(MethodOptions):
    lr: float = opt(0.01, "SGD learning rate", min=0, min_open=True)
    weight_decay: float = opt(5e-4, "weight decay", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    milestones: list = opt([30, 60], "epochs at which the learning rate is multiplied by --gamma (strictly "
                                     "increasing)", min=0, increasing=True)
    gamma: float = opt(0.1, "learning-rate factor at each milestone", min=0, max=1, min_open=True)
    head_dim: int = opt(4096, "width of fc6/fc7 (0: a linear classifier on the final map)", min=0)


@register_method
class Supervised(Method):
    name = "supervised"
    Options = SupervisedOptions
    summary = "The full-supervision baseline: the same encoder trained with labels on a labelled set."
    examples = ("train supervised data/cifar10 --arch cifar --out runs/sup-cifar",
                "train supervised /data/imagenet --out runs/sup-in   (ImageFolder: train/<class>/*.JPEG)")
    data_kind = "labelled"
    default_arch = "alexnet"
    default_epochs = 90
    default_batch_size = 256
    gradient_sync = "ddp"  # one optimiser, one backward per step
    small_options = {"head_dim": 64}

    def __init__(self, opts: SupervisedOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        if not num_classes:
            raise ValueError("supervised: the data set has no labels")
        feat_dim = math.prod(output_shape(self.encoder))
        if opts.head_dim > 0:
            self.head = classifier_head(feat_dim, opts.head_dim, num_classes, dropout=0.5)
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(feat_dim, num_classes))
        attach_classifier(self.encoder, self.head)  # encoder.pt carries it: a teacher for `train distill`

    def configure(self, ctx: RunContext) -> None:
        o: SupervisedOptions = self.opts
        self.optimizers["main"] = sgd(self.parameters(), o, momentum=o.momentum)
        self.schedulers["main"] = step_schedule(self.optimizers["main"], o.milestones, o.gamma)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.prepare(x)))

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = views.to_unit_range(images)
        if self.input_size <= 64:
            return views.padded_random_crop(x, self.input_size, pad=4, generator=generator)
        return views.random_resized_crop(x, self.input_size, generator=generator)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return [self.augment(images, generator)]

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        if batch.labels is None:
            raise ValueError("supervised: batches carry no labels")
        logits = self.replicated(self.augment(batch.images, generator))
        loss = F.cross_entropy(logits.float(), batch.labels)
        self.optimizer_step("main", loss)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == batch.labels).float().mean().detach()}
