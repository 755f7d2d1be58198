"""An online linear probe (solo-learn's ``online linear eval``): a linear classifier trained alongside any method on
detached features of one encoder tap, from each training batch's labels, to watch how linearly separable the
representation is becoming without a separate probe run.

It lives outside the methods, so every method has it. It must not change the training: the features come from a
forward pass of its own, in eval mode (BatchNorm statistics untouched, no dropout) and without gradients; its
weights start at zero (no draw from the global random stream); it has its own optimiser. Its state (weights,
BatchNorm statistics, optimiser) is part of the checkpoint, so a resumed run continues it exactly.

The features are those of the batch's images as loaded (centre crop to the encoder's input size, no augmentation),
global-average-pooled for a map tap, standardised by a BatchNorm without affine parameters (so one learning rate
suits every tap), then the linear layer. Its top-1 is measured on each training batch before the update, the
figure solo-learn logs as ``train_acc1``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.augment import views
from train.models.contract import evaluating, tap_shapes
from train.process import distributed as D

log = logging.getLogger(__name__)

LEARNING_RATE = 0.1  # SGD, momentum 0.9, as solo-learn's online classifier
MOMENTUM = 0.9


def pooled(value: Tensor) -> Tensor:
    """A map tap global-average-pooled to (B, C); a vector tap as it is (the k-NN monitor's rule)."""
    return value.mean(dim=(2, 3)) if value.dim() == 4 else value


class OnlineProbe(nn.Module):
    """The classifier on ``tap`` of ``encoder`` for ``num_classes`` labels, and its optimiser."""

    def __init__(self, encoder: nn.Module, tap: str, num_classes: int, device: torch.device) -> None:
        super().__init__()
        self.tap, self.num_classes = tap, num_classes
        shape = tap_shapes(encoder, [tap])[tap]
        features = shape[0]  # channels of a map tap, the length of a vector tap
        self.norm = nn.BatchNorm1d(features, affine=False)
        # skip_init: nn.Linear's own initialisation draws from the global random stream, which the run's dropout uses
        self.linear = nn.utils.skip_init(nn.Linear, features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.to(device)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    @torch.no_grad()
    def features(self, encoder: nn.Module, images: Tensor) -> Tensor:
        """The pooled ``tap`` features of a uint8 batch, in eval mode (each submodule's mode restored after)."""
        size = int(encoder.input_size)
        x = views.to_unit_range(images)
        if x.shape[-1] != size:
            x = views.center_crop_resize(x, size, crop_fraction=min(1.0, size / x.shape[-1]))
        with evaluating(encoder):
            return pooled(encoder.forward_taps(x, [self.tap])[self.tap]).float()

    def step(self, encoder: nn.Module, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One update on a device batch; ``online_probe_loss`` and ``online_probe_top1`` (percent, before the
        update) as detached scalars for the metrics window. Gradients are averaged over torchrun's ranks, so every
        rank holds the same probe."""
        feats = self.features(encoder, images)
        logits = self.linear(self.norm(feats))
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        D.allreduce_grads(list(self.parameters()))
        self.optimizer.step()
        top1 = (logits.argmax(1) == labels).float().mean() * 100
        return {"online_probe_loss": loss.detach(), "online_probe_top1": top1.detach()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"tap": self.tap, "num_classes": self.num_classes,
                "model": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any] | None, where: str) -> None:
        """Continue from a checkpoint's probe; a checkpoint without one (or of another tap) starts it afresh."""
        if state is None:
            log.warning("%s: no online probe in the checkpoint; it starts afresh at this step", where)
            return
        if state.get("tap") != self.tap or state.get("num_classes") != self.num_classes:
            log.warning("%s: the checkpoint's online probe is on tap %s (%s classes), this run's on %s (%s); it "
                        "starts afresh", where, state.get("tap"), state.get("num_classes"), self.tap,
                        self.num_classes)
            return
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
