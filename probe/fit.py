"""The one supervised fit loop of `probe`: SGD with a step schedule, shared by linear probes and fine-tuning.

Also what the two protocols share as options: the step schedule's settings (each declared here once, with its range
and help; a protocol gives its own default), the image geometry and seed, and :class:`ProbeRun`, how a run is
carried out (device, workers, subsets, progress), which is no part of a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pipeline.options import check_fields, opt
from probe.scoring import Tally, top1_line

Batches = Iterable[tuple[object, Tensor]]  # (inputs, labels), already on the model's device

class Setting:
    """The options the two protocols share, each declared here once with its range and help; a protocol (a frozen
    dataclass whose fields `probe`'s command line is generated from, probe/cli.py) gives its own defaults, as in
    ``epochs: int = Setting.epochs(36)``."""

    @staticmethod
    def epochs(default: int) -> Any:
        return opt(default, "Training epochs.", min=1)

    @staticmethod
    def lr(default: float) -> Any:
        return opt(default, "Initial learning rate.", min=0, min_open=True)

    @staticmethod
    def milestones(default: tuple[int, ...]) -> Any:
        # epochs, in order; a negative one would divide the learning rate before training starts
        return opt(default, "Epochs at which the learning rate is divided by --lr-divisor.", min=0, increasing=True)

    @staticmethod
    def lr_divisor(default: float) -> Any:
        return opt(default, "What the learning rate is divided by at each of --milestones.", min=0, min_open=True)

    @staticmethod
    def momentum(default: float) -> Any:
        return opt(default, "SGD momentum.", min=0)

    @staticmethod
    def weight_decay(default: float, source: str) -> Any:
        return opt(default, f"SGD weight decay ({source}).", min=0)

    @staticmethod
    def size(default: int, what: str) -> Any:
        """ImageNet-style geometry (resize 256, crop 224 as the paper): recorded, no command-line option."""
        return opt(default, what, min=1)

    @staticmethod
    def ten_crop() -> Any:
        return opt(True, "ImageNet-style testing: average 10 crops, or the centre crop only.", negative="center-crop")

    @staticmethod
    def seed() -> Any:
        # 32 bits, as every seed of train and probe (pipeline.options.SEED)
        return opt(0, "Seeds random:ARCH weights, the init of what is trained, and the data order.", min=0,
                   max=2**32 - 1)


class StepSchedule:
    """SGD settings and a learning rate divided by `lr_divisor` at each of `milestones` (epochs); mixed into the
    protocols, whose values it checks when one is made (:func:`pipeline.options.check_fields`)."""

    epochs: int
    lr: float
    lr_divisor: float
    milestones: tuple[int, ...]
    momentum: float
    weight_decay: float

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # as the command line parses it; frozen protocols hold a tuple
            object.__setattr__(self, "milestones", tuple(self.milestones))
        check_fields(self)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of (0-based) `epoch`."""
        return self.lr / self.lr_divisor ** sum(epoch >= m for m in self.milestones)


@dataclass(frozen=True)
class ProbeRun:
    """How a probe run is carried out, apart from its protocol: nothing here changes what is measured, except
    `limit_train`/`limit_test`, seeded random subsets for quick runs (results.json records the sizes used)."""

    device: str = "cpu"
    workers: int = 0  # data-loading processes (0: in this process)
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True


class SingleOutput(nn.Module):
    """`model`'s scores as the one output {name: scores}, for :func:`fit` (which scores several at once)."""

    def __init__(self, model: nn.Module, name: str = "model"):
        super().__init__()
        self.model = model
        self.name = name

    def keys(self) -> list[str]:
        return [self.name]

    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        return {self.name: self.model(inputs)}


def fit(model: nn.Module, parameters: Iterable[nn.Parameter], batches_for_epoch: Callable[[int], Batches],
        schedule: StepSchedule, steps_per_epoch: int | None = None, progress: bool = True) -> list[dict]:
    """Train `model` (inputs -> {output: class scores}, with `keys()` naming its outputs) by SGD on the summed
    cross-entropy of its outputs; one history row per epoch: {"epoch", "lr", "train": {output: top-1/5, loss}}.

    Summing is exact for several linear probes: their parameters are disjoint, so each still receives exactly its
    own gradient.
    """
    optimizer = torch.optim.SGD(parameters, lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    history = []
    for epoch in range(schedule.epochs):
        lr = schedule.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        tally = Tally(model.keys())
        bar = tqdm(batches_for_epoch(epoch), total=steps_per_epoch, disable=not progress, leave=False,
                   desc=f"epoch {epoch + 1}/{schedule.epochs}")
        for inputs, labels in bar:
            scores = model(inputs)
            losses = {name: F.cross_entropy(s, labels) for name, s in scores.items()}
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            tally.add(scores, labels, losses)
        summary = tally.summary()
        history.append({"epoch": epoch + 1, "lr": lr, "train": summary})
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{schedule.epochs} lr {lr:.2e} train top-1: {top1_line(summary)}")
    return history
