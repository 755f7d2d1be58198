"""A k-NN monitor of a run: weighted k-nearest-neighbour top-1 on a labelled set, from the features of one tap.

The classifier is InstDisc's (Wu et al., 2018) as DINO's ``eval_knn.py`` runs it: features L2-normalised, the
``k`` (20) most cosine-similar training samples vote for their class with weight ``exp(similarity / T)``
(T = 0.07), the class with the largest total wins. A spatial tap (B, C, H, W) is global-average-pooled to
(B, C) first (flattening a ResNet stem would make 65,536-dimensional features); a vector tap is used as it is.

:func:`knn_predict` is the pure classifier; :class:`KnnMonitor` holds a labelled set (image tensors in memory,
uint8 or float in [0, 255], mapped to (-1, 1) as the methods feed their encoders) and measures an encoder on it.
Wiring it into the loop (every N epochs, into ``metrics.jsonl``) is the loop's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models.contract import evaluating
from train.views import to_unit_range


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
