"""BYOL (Grill et al., NeurIPS 2020, "Bootstrap your own latent"): an online network (encoder, projector,
predictor) predicts a slowly moving target network's projection of another view; no negatives.

Defaults, the paper's (section 3.3 and appendix B/C): projector and predictor MLPs of 4,096 hidden units with BatchNorm
and ReLU to 256 dimensions, the target's EMA momentum from 0.996 to 1 by a half cosine over the run (per iteration,
:func:`train.methods.schedules.ema_momentum`), the symmetrised normalised-MSE loss (both views through both networks),
weight decay 1.5e-6, learning rate 0.2 x batch / 256 with a 10-epoch warm-up and a cosine decay per iteration; the
asymmetric views of its table 6 (:func:`train.augment.multiview.byol_views`: solarisation on the second view, blur only
from 64 px unless ``--blur on``, as CIFAR recipes drop it).

The optimiser is SGD with momentum 0.9, not the paper's LARS, for the reasons given in simclr.py (LARS serves
batches of 4,096; torch has none); the rate is the paper's rule, untuned for SGD (``--lr``).

Both views go through the online network as one batch (one forward per step for DistributedDataParallel; BatchNorm
sees the 2N views together, where the paper's code normalises each view's batch separately); the target network
likewise, without gradients. It is a frozen copy of the online encoder and projector, updated after each
optimiser step; only the online encoder is exported to encoder.pt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.options import opt
from train.augment.multiview import ViewSpec, byol_views
from train.data.sources import Batch
from train.losses import byol_loss
from train.methods import register_method
from train.methods.multiview_base import MultiViewMethod, MultiViewOptions, ema_update, frozen_copy
from train.methods.schedules import ema_momentum
from train.models.heads import projection_mlp


@dataclass
class BYOLOptions(MultiViewOptions):
    lr: float = opt(0.2, "learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    weight_decay: float = opt(1.5e-6, "weight decay", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    warmup_epochs: float = opt(10.0, "epochs of linear learning-rate warm-up from 0 (then a cosine to 0)", min=0)
    target_momentum: float = opt(0.996, "the target's EMA momentum at the start (a cosine to 1 over the run)",
                                 min=0, max=1)
    proj_hidden: int = opt(4096, "hidden units of the projector and the predictor", min=1)
    proj_dim: int = opt(256, "output dimensions of the projector and the predictor", min=1)
    blur: str = opt("auto", "Gaussian blur (p = 1.0 / 0.1 on the two views; auto: only for inputs of 64 px or "
                            "more)", choices=("auto", "on", "off"))


@register_method
class BYOL(MultiViewMethod):
    name = "byol"
    Options = BYOLOptions
    summary = ("BYOL (Grill et al., 2020): an online network predicts the projection of another view by an EMA "
               "target network (momentum 0.996 -> 1, cosine); the paper's heads and schedules, SGD.")
    examples = ("train byol shards/mono-b --out runs/byol-mono-b",
                "train byol shards/mono-b --out runs/byol-small-head --proj-hidden 1024 --batch-size 128")
    small_options = {"proj_hidden": 32, "proj_dim": 16, "warmup_epochs": 0.05}

    def __init__(self, opts: BYOLOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.projector = projection_mlp(self.feature_dim, opts.proj_hidden, opts.proj_dim)
        self.predictor = projection_mlp(opts.proj_dim, opts.proj_hidden, opts.proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)

    def make_optimizer(self) -> torch.optim.Optimizer:
        o: BYOLOptions = self.opts
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(trainable, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def view_specs(self) -> list[ViewSpec]:
        return byol_views(self.input_size, blur=None if self.opts.blur == "auto" else self.opts.blur == "on")

    def forward(self, views: Tensor) -> Tensor:
        return self.predictor(self.projector(self.features(views)))

    @torch.no_grad()
    def targets(self, views: Tensor) -> Tensor:
        return self.target_projector(self.features(views, self.target_encoder))

    def target_momentum_now(self) -> float:
        return ema_momentum(self.steps_done, self.schedule_steps, self.opts.target_momentum)

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        self.apply_schedules(len(batch))
        both = torch.cat(self.views(batch.images, generator))
        n = len(batch)
        predictions = self.replicated(both).float()
        targets = self.targets(both).float()
        # symmetrised: view 1's prediction of view 2's target and the reverse (BYOL's L + L~)
        loss = byol_loss(predictions[:n], targets[n:]) + byol_loss(predictions[n:], targets[:n])
        self.optimizer_step("main", loss)
        tau = self.target_momentum_now()
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
        return {"loss": loss.detach(), "target_momentum": torch.tensor(tau, device=loss.device)}
