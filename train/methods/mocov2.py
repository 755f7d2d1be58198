"""MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick and He, 2020, "Improved baselines with momentum contrastive
learning"): a query encoder trained with InfoNCE against the key of the other view from a momentum encoder and a
queue of earlier keys.

Defaults, MoCo v2's (its section 3 / main_moco.py --mlp --aug-plus --cos): SGD, momentum 0.9, weight decay 1e-4,
learning rate 0.03 x batch / 256 with a cosine decay per iteration and no warm-up, temperature 0.2, key-encoder
momentum 0.999 (constant), an MLP head (2048 hidden units, ReLU, no BatchNorm) to 128 dimensions, the
"aug-plus" views with blur (:func:`train.multiview.mocov2_views`; blur below 64 px only with ``--blur on``, as
for CIFAR). The queue holds 4,096 keys, the value of the MoCo authors' CIFAR-10 demo (moco_cifar10_demo.ipynb)
instead of ImageNet's 65,536, which would exceed CIFAR-10's 50,000 images (the keys of an image's own earlier
views would be its negatives).

Not reproduced: shuffling BatchNorm across GPUs (MoCo's guard against a batch-statistics shortcut); like
solo-learn's single-device MoCo v2, the query and key batches normalise by their own statistics. The loss is
MoCo v2's asymmetric one (query of view 1, key of view 2).

One forward of the trainable networks per step (the query), so DistributedDataParallel carries the gradients; the
keys are gathered from every process before they enter the queue, so each process holds the same queue. The queue
and its pointer are buffers of the method: the checkpoint holds them with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from pipeline.errors import OptionError
from pipeline.options import opt
from train import distributed as D
from train.data import Batch
from train.losses import enqueue, infonce_loss
from train.methods import register_method
from train.methods.multiview_base import MultiViewMethod, MultiViewOptions, ema_update, frozen_copy
from train.models.heads import projection_mlp
from train.multiview import ViewSpec, mocov2_views


@dataclass
class MoCoV2Options(MultiViewOptions):
    lr: float = opt(0.03, "learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    weight_decay: float = opt(1e-4, "weight decay", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    warmup_epochs: float = opt(0.0, "epochs of linear learning-rate warm-up from 0 (then a cosine to 0)", min=0)
    temperature: float = opt(0.2, "InfoNCE temperature", min=0, min_open=True)
    key_momentum: float = opt(0.999, "momentum of the key encoder's moving average", min=0, max=1)
    queue_size: int = opt(4096, "keys in the queue of negatives", min=1)
    proj_hidden: int = opt(2048, "hidden units of the MLP head", min=1)
    proj_dim: int = opt(128, "output dimensions of the MLP head (the keys' width)", min=1)
    blur: str = opt("auto", "Gaussian blur with p = 0.5 (auto: only for inputs of 64 px or more)",
                    choices=("auto", "on", "off"))


@register_method
class MoCoV2(MultiViewMethod):
    name = "mocov2"
    Options = MoCoV2Options
    summary = ("MoCo v2 (Chen et al., 2020): InfoNCE between a query and a momentum encoder's key of another "
               "view, against a queue of earlier keys; MoCo v2's defaults, a 4,096-key queue for CIFAR-sized sets.")
    examples = ("train mocov2 shards/mono-b --out runs/moco-mono-b",
                "train mocov2 shards/mono-b --out runs/moco-q8k --queue-size 8192 --blur on")
    small_options = {"proj_hidden": 32, "proj_dim": 16, "queue_size": 48, "warmup_epochs": 0.05}

    def __init__(self, opts: MoCoV2Options, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.projector = projection_mlp(self.feature_dim, opts.proj_hidden, opts.proj_dim, batchnorm=False)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        # MoCo starts the queue with random unit vectors
        self.register_buffer("queue", torch.nn.functional.normalize(torch.randn(opts.queue_size, opts.proj_dim),
                                                                    dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

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
        pointer = enqueue(self.queue, int(self.queue_pointer), all_gather_rows(k))
        self.queue_pointer.fill_(pointer)
        return {"loss": loss.detach()}


@torch.no_grad()
def all_gather_rows(t: Tensor) -> Tensor:
    """Every process's rows, in rank order (MoCo's ``concat_all_gather``); ``t`` itself in a single process."""
    if not D.is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(D.world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
