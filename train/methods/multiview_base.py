"""What the four modern methods share (SimCLR, MoCo v2, BYOL, DINO; one file each beside this one): the pooled
backbone feature their heads sit on, frozen EMA copies (BYOL's target, MoCo's key encoder, DINO's teacher),
per-iteration learning-rate (and weight-decay) schedules with the batch-size rule, and their views.

- The feature: the encoder's ``forward`` output, globally average-pooled when it is a map: a ResNet's pooled layer4
  (already a vector), a ViT's final class token (``forward``, after the last LayerNorm: DINO's choice), the
  AlexNet and CIFAR encoders' last convolutional map averaged over its positions (``pooled``).
- Schedules are pure functions of the step (:mod:`train.methods.schedules`) computed at the start of each
  ``training_step`` from ``steps_done``, which ``on_step_end`` sets from the loop's step counter and
  ``extra_state`` checkpoints: a resumed run recomputes every rate, momentum and temperature exactly. The
  schedule's length is the run's ``--epochs`` (also when ``--max-steps`` stops it earlier), as the papers'.
- The learning rate follows the papers' linear rule: ``--lr`` is the rate for 256 images, multiplied by the global
  batch (batch x processes) / 256.
- The EMA copies are updated inside ``training_step``, after the optimiser step (so a step is one call, also for
  ``bench/train_throughput.py``); their parameters do not require gradients, are left out of the optimisers and
  are never exported: ``encoder.pt`` is ``self.encoder``, the student / online / query network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common.options import opt
from train.augment.multiview import ViewSpec, multiview
from train.methods.base import Method, MethodOptions, RunContext
from train.methods.schedules import cosine_schedule
from train.models import output_shape


@dataclass
class MultiViewOptions(MethodOptions):
    """The options every multi-view method has; each method sets its paper's defaults."""

    lr: float = opt(0.3, "learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    weight_decay: float = opt(1e-6, "weight decay", min=0)
    warmup_epochs: float = opt(10.0, "epochs of linear learning-rate warm-up from 0 (then a cosine to 0)", min=0)


def pooled(features: Tensor) -> Tensor:
    """A (B, C, H, W) map averaged over its positions to (B, C); a (B, D) vector unchanged."""
    return features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters take no gradient (an EMA target starts as the online network)."""
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online``, parameter by parameter (BYOL eq. 1, MoCo eq. 2,
    DINO's teacher update). Buffers (BatchNorm statistics) are not averaged: the target's come from its own
    forward passes, as in the three references."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


class MultiViewMethod(Method):
    """A method trained on several augmented views of each image with per-iteration schedules (see the module doc).

    Subclasses declare ``view_specs()``, build their optimiser in ``make_optimizer()`` and, in
    ``training_step``, call ``apply_schedules(len(batch))`` first."""

    default_arch = "resnet18-cifar"
    default_epochs = 200
    default_batch_size = 256
    schedule_unit = "step"
    gradient_sync = "ddp"  # one optimiser and one forward of the trainable networks per step (each method's forward)

    def __init__(self, opts, arch: str, num_samples: int, num_classes=None, device="cpu") -> None:
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.feature_dim = output_shape(self.encoder)[0]  # channels of a map, or the vector's width
        self.steps_done = 0
        self.schedule_steps = 1
        self.steps_per_epoch = 1
        self.world_size = 1

    # ---- the run ----------------------------------------------------------------------------------------
    def configure(self, ctx: RunContext) -> None:
        self.steps_per_epoch = ctx.steps_per_epoch
        self.schedule_steps = max(1, ctx.total_epochs * ctx.steps_per_epoch)
        self.world_size = ctx.world_size
        self.optimizers["main"] = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def epochs_to_steps(self, epochs: float) -> int:
        return min(self.schedule_steps, round(epochs * self.steps_per_epoch))

    def apply_schedules(self, batch_size: int) -> dict[str, float]:
        """Set every parameter group's rate (and weight decay where the method schedules it) for step
        ``steps_done``: warm-up from 0 over ``--warmup-epochs`` then a half cosine to ``min_lr``; a group with
        ``frozen_until`` > step gets rate 0 (DINO's last layer in its first epoch)."""
        o = self.opts
        peak = o.lr * batch_size * self.world_size / 256
        lr = cosine_schedule(self.steps_done, self.schedule_steps, peak, final=getattr(o, "min_lr", 0.0),
                             warmup_steps=self.epochs_to_steps(o.warmup_epochs))
        wd = self.weight_decay_now()
        for group in self.optimizers["main"].param_groups:
            group["lr"] = 0.0 if self.steps_done < group.get("frozen_until", 0) else lr
            if wd is not None and group.get("decay", True):
                group["weight_decay"] = wd
        return {"lr": lr}

    def weight_decay_now(self) -> float | None:
        """The weight decay for step ``steps_done`` when the method schedules it (DINO), else None."""
        return None

    def on_step_end(self, step: int) -> None:
        self.steps_done = step
        super().on_step_end(step)

    def extra_state(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])

    # ---- views and features -----------------------------------------------------------------------------
    def view_specs(self) -> list[ViewSpec]:
        raise NotImplementedError

    def views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return multiview(images, self.view_specs(), generator)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """A few augmented views of uint8 ``images`` in (-1, 1), for pictures of a batch (never called by
        ``training_step``: it draws from ``generator``)."""
        return self.views(images.to(self.device), generator)

    def features(self, x: Tensor, encoder: nn.Module | None = None) -> Tensor:
        return pooled((self.encoder if encoder is None else encoder)(self.prepare(x)))
