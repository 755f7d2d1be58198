"""Accuracy bookkeeping for several probes at once, and 10-crop score averaging."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor


def average_crops(scores: Tensor, crops: int) -> Tensor:
    """Mean class probabilities over each image's crops: (B * crops, C) scores -> (B, C).

    DeepCluster's protocol, which the paper follows: softmax each crop's scores, then average.
    Rows are grouped per image (image 0's crops first), as a flattened (B, crops, ...) batch gives them.
    """
    if scores.shape[0] % crops:
        raise ValueError(f"{scores.shape[0]} score rows are not a multiple of {crops} crops")
    return scores.softmax(dim=1).view(-1, crops, scores.shape[1]).mean(dim=1)


def topk_correct(scores: Tensor, labels: Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """How many rows have their label among the k highest scores, for each k (capped at the class count)."""
    ks = tuple(ks)
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels.unsqueeze(1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


class Tally:
    """Running top-1 / top-5 counts and mean loss per probe."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.seen = 0
        self.correct = {name: {1: 0, 5: 0} for name in self.names}
        self.loss = dict.fromkeys(self.names, 0.0)

    def add(self, scores: dict[str, Tensor], labels: Tensor, losses: dict[str, Tensor] | None = None) -> None:
        self.seen += labels.shape[0]
        for name in self.names:
            for k, n in topk_correct(scores[name].detach(), labels).items():
                self.correct[name][k] += n
            if losses is not None:
                self.loss[name] += float(losses[name].detach()) * labels.shape[0]

    def summary(self, with_loss: bool = True) -> dict[str, dict[str, float]]:
        seen = max(self.seen, 1)
        out = {}
        for name in self.names:
            row = {"top1": 100.0 * self.correct[name][1] / seen, "top5": 100.0 * self.correct[name][5] / seen}
            if with_loss:
                row["loss"] = self.loss[name] / seen
            out[name] = row
        return out


def top1_line(summary: dict[str, dict[str, float]]) -> str:
    """'conv1 57.3 | conv2 55.1' for progress bars and logs."""
    return " | ".join(f"{name} {row['top1']:.1f}" for name, row in summary.items())

