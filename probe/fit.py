"""The one supervised fit loop of `probe`: SGD with a step schedule, shared by linear probes and fine-tuning.

Also what the two protocols share as options: the step schedule's settings (each declared here once, with its range
and help; a protocol gives its own default), the image geometry and seed, and :class:`ProbeRun`, how a run is
carried out (device, workers, subsets, progress), which is no part of a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from probe.protocols import StepSchedule
from probe.scoring import Tally, top1_line

Batches = Iterable[tuple[object, Tensor]]  # (inputs, labels), already on the model's device

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
