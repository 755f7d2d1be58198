"""MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick and He, 2020, "Improved baselines with momentum contrastive
learning"): a query encoder trained with InfoNCE against the key of the other view from a momentum encoder and a
queue of earlier keys.

Defaults, MoCo v2's (its section 3 / main_moco.py --mlp --aug-plus --cos): SGD, momentum 0.9, learning rate
0.03 x batch / 256 with a cosine decay per iteration and no warm-up, an MLP head (2048 hidden units, ReLU, no
BatchNorm) to 128 dimensions, the "aug-plus" views with blur (:func:`train.augment.multiview.mocov2_views`; blur below
64 px only with ``--blur on``, as for CIFAR). Where the MoCo authors' own CIFAR-10 recipe (facebookresearch/moco,
colab/moco_cifar10_demo.ipynb: lr 0.06 for batch 512, i.e. the same 0.03 per 256) sets a value of its own, it is
the default for inputs below 64 px, and MoCo v2's ImageNet value from 64 px (:data:`BY_INPUT_SIZE`):
temperature 0.1 (ImageNet 0.2), key-encoder momentum 0.99 (0.999; constant), weight decay 5e-4 (1e-4). The queue
holds 4,096 keys, the demo's value, instead of ImageNet's 65,536, which would exceed CIFAR-10's 50,000 images
(the keys of an image's own earlier views would be its negatives).

Not reproduced: shuffling BatchNorm across GPUs (MoCo's guard against a batch-statistics shortcut); like
solo-learn's single-device MoCo v2, the query and key batches normalise by their own statistics. The loss is
MoCo v2's asymmetric one (query of view 1, key of view 2).

One forward of the trainable networks per step (the query), so DistributedDataParallel carries the gradients; the
keys are gathered from every process before they enter the queue, so each process holds the same queue. The queue
is a buffer of the method (the checkpoint holds it with the weights), its pointer extra state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from common.errors import OptionError
from common.options import opt
from train.augment.multiview import ViewSpec, mocov2_views
from train.data.sources import Batch
from train.losses import enqueue, infonce_loss
from train.methods import register_method
from train.methods.multiview_base import MultiViewMethod, MultiViewOptions, ema_update, frozen_copy
from train.models.heads import projection_mlp
from train.process import distributed as D


@dataclass
class MoCoV2Options(MultiViewOptions):
    lr: float = opt(0.03, "learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    weight_decay: float = opt(-1.0, "weight decay (auto: 5e-4 below 64 px, the authors' CIFAR-10 demo, else "
                                    "MoCo v2's 1e-4)", min=0, auto=-1)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    warmup_epochs: float = opt(0.0, "epochs of linear learning-rate warm-up from 0 (then a cosine to 0)", min=0)
    temperature: float = opt(0.0, "InfoNCE temperature (0: 0.1 below 64 px, the authors' CIFAR-10 demo, else "
                                  "MoCo v2's 0.2)", min=0, min_open=True, auto=0)
    key_momentum: float = opt(0.0, "momentum of the key encoder's moving average (0: 0.99 below 64 px, the "
                                   "authors' CIFAR-10 demo, else MoCo v2's 0.999)", min=0, max=1, min_open=True,
                              auto=0)
    queue_size: int = opt(4096, "keys in the queue of negatives", min=1)
    proj_hidden: int = opt(2048, "hidden units of the MLP head", min=1)
    proj_dim: int = opt(128, "output dimensions of the MLP head (the keys' width)", min=1)
    blur: str = opt("auto", "Gaussian blur with p = 0.5 (auto: only for inputs of 64 px or more)",
                    choices=("auto", "on", "off"))


# option: (value below 64 px, the MoCo authors' CIFAR-10 demo; value from 64 px, MoCo v2's ImageNet one), for
# the options left automatic
BY_INPUT_SIZE = {"temperature": (0.0, 0.1, 0.2), "key_momentum": (0.0, 0.99, 0.999),
                 "weight_decay": (-1.0, 5e-4, 1e-4)}


def resolved_options(opts: MoCoV2Options, input_size: int) -> MoCoV2Options:
    """``opts`` with each automatic value of :data:`BY_INPUT_SIZE` replaced by its value for ``input_size``."""
    chosen = {name: (small if input_size < 64 else large)
              for name, (auto, small, large) in BY_INPUT_SIZE.items() if getattr(opts, name) == auto}
    return replace(opts, **chosen)


@register_method
class MoCoV2(MultiViewMethod):
    name = "mocov2"
    Options = MoCoV2Options
    summary = ("MoCo v2 (Chen et al., 2020): InfoNCE between a query and a momentum encoder's key of another "
               "view, against a queue of earlier keys; MoCo v2's defaults, its authors' CIFAR-10 values below 64 px.")
    examples = ("train mocov2 shards/mono-b --out runs/moco-mono-b",
                "train mocov2 shards/mono-b --out runs/moco-q8k --queue-size 8192 --blur on")
    small_options = {"proj_hidden": 32, "proj_dim": 16, "queue_size": 48, "warmup_epochs": 0.05}

    def __init__(self, opts: MoCoV2Options, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.opts = resolved_options(opts, self.input_size)
        self.projector = projection_mlp(self.feature_dim, opts.proj_hidden, opts.proj_dim, batchnorm=False)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        # MoCo starts the queue with random unit vectors
        self.register_buffer("queue", torch.nn.functional.normalize(torch.randn(opts.queue_size, opts.proj_dim),
                                                                    dim=1))
        self.queue_pointer = 0  # the next row to write (extra_state: a Python int, read without a device sync)

    def make_optimizer(self) -> torch.optim.Optimizer:
        o: MoCoV2Options = self.opts
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(trainable, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def view_specs(self) -> list[ViewSpec]:
        return mocov2_views(self.input_size, blur=None if self.opts.blur == "auto" else self.opts.blur == "on")

    def forward(self, queries: Tensor) -> Tensor:
        return self.projector(self.features(queries))

    @torch.no_grad()
    def keys(self, views: Tensor) -> Tensor:
        return self.key_projector(self.features(views, self.key_encoder))

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        o: MoCoV2Options = self.opts
        self.apply_schedules(len(batch))
        query_view, key_view = self.views(batch.images, generator)
        if len(batch) * self.world_size > o.queue_size:
            raise OptionError(f"mocov2: --queue-size {o.queue_size} is smaller than a step's keys "
                              f"({len(batch) * self.world_size})")
        q = self.replicated(query_view).float()
        # MoCo's order: the key encoder moves towards the query encoder before it encodes this step's keys
        ema_update(self.key_encoder, self.encoder, o.key_momentum)
        ema_update(self.key_projector, self.projector, o.key_momentum)
        k = self.keys(key_view).float()
        loss = infonce_loss(q, k, self.queue, o.temperature)
        self.optimizer_step("main", loss)
        self.queue_pointer = enqueue(self.queue, self.queue_pointer, all_gather_rows(k))
        return {"loss": loss.detach()}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "queue_pointer": self.queue_pointer}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.queue_pointer = int(state["queue_pointer"])


@torch.no_grad()
def all_gather_rows(t: Tensor) -> Tensor:
    """Every process's rows, in rank order (MoCo's ``concat_all_gather``); ``t`` itself in a single process."""
    if not D.is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(D.world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
