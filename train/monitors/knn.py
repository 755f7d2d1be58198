"""A k-NN monitor of a run: weighted k-nearest-neighbour top-1 on a labelled set, from the features of one tap.

The classifier is InstDisc's (Wu et al., 2018) as DINO's ``eval_knn.py`` runs it: features L2-normalised, the
``k`` (20) most cosine-similar training samples vote for their class with weight ``exp(similarity / T)``
(T = 0.07), the class with the largest total wins. A spatial tap (B, C, H, W) is global-average-pooled to
(B, C) first (flattening a ResNet stem would make 65,536-dimensional features); a vector tap is used as it is.

:func:`knn_predict` is the pure classifier; :class:`KnnMonitor` holds a labelled set (image tensors in memory,
uint8 or float in [0, 255], mapped to (-1, 1) as the methods feed their encoders) and measures an encoder on it;
:func:`open_knn_monitor` fills one from a labelled set on disk (``train --knn-data``). The loop runs it every N
epochs on rank 0 and writes its record into ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import DataError
from train.augment.views import to_unit_range
from train.data.sources import LabelledSource
from train.models.contract import evaluating


def knn_predict(train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """The weighted k-NN class of each test feature (N_test,), voting among ``train_features`` (N_train, D).

    Ties between equally similar neighbours are broken by ``torch.topk`` (lowest index first on the CPU); ties
    between class totals by the lowest class index. Test features are processed ``chunk`` at a time, so memory
    is ``chunk * N_train`` similarities.
    """
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(f"{train_features.shape[0]} training features but {train_labels.shape[0]} labels")
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(train.device, torch.long)
    predictions = []
    for start in range(0, test_features.shape[0], chunk):
        test = F.normalize(test_features[start:start + chunk].float().to(train.device), dim=1)
        similarity, neighbours = (test @ train.t()).topk(k, dim=1)
        votes = torch.zeros(test.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, labels[neighbours], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def tap_features(encoder: nn.Module, images: Tensor, tap: str, batch_size: int = 256) -> Tensor:
    """The ``tap`` features of ``images`` (uint8 or float in [0, 255], (N, 3, H, W)) in eval mode, (N, D): a map
    tap global-average-pooled, a vector tap as it is. The encoder's mode is restored afterwards."""
    device = next(encoder.parameters()).device
    features = []
    with evaluating(encoder):
        for start in range(0, images.shape[0], batch_size):
            x = to_unit_range(images[start:start + batch_size].to(device))
            value = encoder.forward_taps(x, [tap])[tap]
            features.append((value.mean(dim=(2, 3)) if value.dim() == 4 else value).float())
    return torch.cat(features)


@dataclass
class KnnMonitor:
    """Weighted k-NN top-1 of an encoder's ``tap`` on a labelled set held in memory."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    tap: str
    k: int = 20
    temperature: float = 0.07

    def evaluate(self, encoder: nn.Module) -> dict[str, float | int | str]:
        """``{'knn_top1': percent, 'knn_tap', 'knn_k'}``, the record the loop writes into ``metrics.jsonl``."""
        train = tap_features(encoder, self.train_images, self.tap)
        test = tap_features(encoder, self.test_images, self.tap)
        predicted = knn_predict(train, self.train_labels, test, self.num_classes, self.k, self.temperature)
        correct = (predicted.cpu() == self.test_labels.cpu().long()).float().mean().item()
        return {"knn_top1": 100.0 * correct, "knn_tap": self.tap, "knn_k": self.k}


def labelled_root(spec: str) -> Path:
    """The folder a ``--knn-data`` value names: ``PATH``, or ``KIND:PATH`` for a data kind whose PATH is a folder that
    LabelledSource reads (``labelled_folder``: it tells CIFAR pickles from an ImageFolder tree by itself), so
    `--knn-data` accepts the spelling `probe --data` takes; cifar10-jpg names the shared train.tar.gz and test.tar.gz,
    extracted once into the cache as `probe` does (train/ and test/ folders). A rendered (unlabelled) set is refused
    in one line."""
    from train.data.kinds import KINDS

    prefix, sep, rest = spec.partition(":")
    kind = KINDS.get(prefix) if sep else None
    if kind is not None and kind.labelled_folder:
        root = kind.labelled_root(Path(rest).expanduser())
    else:
        root = Path(spec).expanduser()
    if (root / "manifest.json").is_file():
        raise DataError(f"{root}: a set of shards (manifest.json), not a labelled set; the k-NN monitor needs "
                        f"labels: a CIFAR-10/100 folder or an ImageFolder tree (train/ and val/ class folders)")
    if not root.is_dir():
        raise DataError(f"{root}: no such labelled data set folder")
    return root


def _subset_images(source: LabelledSource, indices: list[int]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for i in indices:
        item = source.dataset[i]
        if not isinstance(item, tuple):  # an unreadable image: the message naming its file
            raise DataError(item.message)
        images.append(item[0])
        labels.append(item[1])
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def open_knn_monitor(spec: str, input_size: int, tap: str, k: int, train_size: int, test_size: int,
                     seed: int, temperature: float = 0.07) -> KnnMonitor:
    """A monitor on seeded subsets (``train_size`` and ``test_size`` images, or all of a smaller split) of the
    labelled set ``spec``, its images brought to ``input_size`` px (short side resized, centre crop).

    CIFAR's test split, or an ImageFolder's ``val/`` (or ``test/``) beside ``train/``, is the test set; an ImageFolder
    of class folders alone is split in two disjoint subsets. The subsets come from their own generator seeded with
    ``seed``: nothing is drawn from the run's random streams.
    """
    root = labelled_root(spec)
    train = LabelledSource(root, input_size, "train")
    held_out = next((name for name in ("val", "test") if (root / name).is_dir()), "test")
    single_folder = train.identity["kind"] == "ImageFolder" and not (root / "train").is_dir()
    test = train if single_folder else LabelledSource(root, input_size, held_out)
    if train.num_classes < 2:
        raise DataError(f"{root}: {train.num_classes} class; the k-NN monitor needs at least two")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(train.num_samples, generator=generator).tolist()
    if single_folder:
        if len(order) < 2:
            raise DataError(f"{root}: {len(order)} image; the k-NN monitor needs a training and a test image")
        n_test = min(test_size, len(order) // 2)
        test_indices, train_indices = order[:n_test], order[n_test:n_test + train_size]
    else:
        train_indices = order[:train_size]
        test_indices = torch.randperm(test.num_samples, generator=generator)[:test_size].tolist()
    train_images, train_labels = _subset_images(train, sorted(train_indices))
    test_images, test_labels = _subset_images(test, sorted(test_indices))
    return KnnMonitor(train_images, train_labels, test_images, test_labels, train.num_classes, tap, k, temperature)
