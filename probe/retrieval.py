"""`probe visualize --retrieve`: the images of a data set that excite each unit most (the paper's Figure 5,
right), in one streamed pass with bounded memory: per unit, only the k best scores, their positions in the
stream and their images are kept, whatever the size of the data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import transforms as T
from tqdm import tqdm

from probe.datasets import LabelledData, data_loader, transformed
from probe.encoders import Encoder, probing_trunk
from probe.transforms import Normalization
from probe.visualize import check_units


class TopK:
    """The k highest scores of each of `units` score streams, with each one's stream position and an item (an
    image) carried along. Memory is k entries per unit plus one batch, however long the stream.

    Order: higher score first, and for equal scores the earlier position, so the result equals a stable sort of
    the whole stream (`tests/probe/test_retrieval.py` checks it against one).
    """

    def __init__(self, units: int, k: int):
        self.k = k
        self.scores = torch.empty(units, 0)
        self.positions = torch.empty(units, 0, dtype=torch.long)
        self.items: Tensor | None = None  # (units, <= k, *item shape)

    def push(self, scores: Tensor, positions: Tensor, items: Tensor) -> None:
        """Offer a batch: scores (B, units), positions (B,), items (B, ...)."""
        units, held = self.scores.shape
        scores = torch.cat([self.scores, scores.detach().float().T.cpu()], dim=1)
        positions = torch.cat([self.positions, positions.view(1, -1).expand(units, -1)], dim=1)
        # a stable sort by position, then a stable sort by descending score: ties keep the earlier position
        by_position = positions.argsort(dim=1, stable=True)
        by_score = scores.gather(1, by_position).argsort(dim=1, descending=True, stable=True)
        keep = by_position.gather(1, by_score)[:, :self.k]
        self.scores, self.positions = scores.gather(1, keep), positions.gather(1, keep)
        items = items.detach().cpu()
        kept = torch.empty(units, keep.shape[1], *items.shape[1:], dtype=items.dtype)
        for unit, chosen in enumerate(keep):  # copied item by item: no (units, k + B, ...) intermediate
            from_held = chosen < held
            if from_held.any():
                kept[unit, from_held] = self.items[unit, chosen[from_held]]
            kept[unit, ~from_held] = items[chosen[~from_held] - held]
        self.items = kept

    @property
    def held(self) -> int:
        """Entries held per unit (never more than k)."""
        return self.scores.shape[1]


@dataclass
class Retrieved:
    tap: str
    unit: int
    scores: list[float]
    positions: list[int]  # order of the image in the streamed split
    images: Tensor  # (k, 3, H, W) uint8


def retrieval_transform(data: LabelledData, input_size: int) -> T.Compose:
    """Images as the encoder sees them, unnormalised (kept for display): CIFAR-style data as they are,
    ImageNet-style data resized and centre-cropped to the encoder's input size (256/224 as the probes)."""
    if data.style == "cifar":
        return T.ToTensor()
    return T.Compose([T.Resize(round(input_size * 256 / 224)), T.CenterCrop(input_size), T.ToTensor()])


def unit_scores(features: dict[str, Tensor], units: list[tuple[str, int]]) -> Tensor:
    """(B, units): each unit's largest activation over positions (its value, for a vector tap)."""
    columns = []
    for tap, unit in units:
        activation = features[tap][:, unit]
        columns.append(activation.flatten(1).amax(dim=1) if activation.dim() > 1 else activation)
    return torch.stack(columns, dim=1)


@torch.no_grad()
def retrieve_top(encoder: Encoder, data: LabelledData, units: list[tuple[str, int]], k: int,
                 normalization: Normalization, split: str = "train", batch_size: int = 128, workers: int = 0,
                 device: str = "cpu", progress: bool = False) -> list[Retrieved]:
    """For each unit, the k images of `data`'s `split` with its highest activation, in one streamed pass."""
    check_units(encoder, units, encoder.input_size)
    trunk = probing_trunk(encoder).to(device)
    taps = sorted({tap for tap, _ in units}, key=encoder.taps.index)
    mean = torch.tensor(normalization.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, device=device).view(1, 3, 1, 1)
    dataset = transformed(getattr(data, split), retrieval_transform(data, encoder.input_size))
    best = TopK(len(units), k)
    seen = 0
    for images, _ in tqdm(data_loader(dataset, batch_size, workers=workers), disable=not progress, leave=False,
                          desc="retrieve"):
        batch = images.to(device)
        scores = unit_scores(trunk.forward_taps((batch - mean) / std, taps), units)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        best.push(scores, torch.arange(seen, seen + len(images)), pixels)
        seen += len(images)
    if best.items is None:
        return []
    return [Retrieved(tap, unit, best.scores[i].tolist(), best.positions[i].tolist(), best.items[i])
            for i, (tap, unit) in enumerate(units)]
