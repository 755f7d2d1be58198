"""The k-NN monitor (train/monitors/knn.py) against a brute-force weighted k-NN written out loop by loop."""

from __future__ import annotations

import math

import pytest
import torch

from train.models import build_encoder
from train.monitors.knn import KnnMonitor, knn_predict, tap_features


def _brute_force(train, labels, test, num_classes, k, temperature):
    predictions = []
    for query in test:
        sims = [float(query @ row / (query.norm() * row.norm())) for row in train]
        order = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(labels[j])] += math.exp(sims[j] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return predictions


@pytest.mark.parametrize(("k", "temperature", "chunk"), [(20, 0.07, 1024), (5, 0.5, 7), (1, 0.07, 3), (50, 1.0, 8)])
def test_knn_predict_equals_brute_force(k, temperature, chunk):
    generator = torch.Generator().manual_seed(k)
    train, test = torch.randn(40, 6, generator=generator), torch.randn(25, 6, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    ours = knn_predict(train, labels, test, 4, k=k, temperature=temperature, chunk=chunk)
    assert ours.tolist() == _brute_force(train, labels, test, 4, min(k, 40), temperature)


def test_knn_weights_votes_by_similarity_not_count():
    # two neighbours of class 1 far off, one of class 0 almost equal to the query: the weights decide
    train = torch.tensor([[1.0, 0.02], [0.2, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), 2, k=3).item() == 0


def test_monitor_scores_an_encoder_on_a_named_tap_and_restores_its_mode():
    torch.manual_seed(0)
    encoder = build_encoder("cifar").train()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(24) % 3
    features = tap_features(encoder, images, "conv2", batch_size=5)
    assert features.shape == (24, 256) and encoder.training
    with torch.no_grad():
        direct = encoder.eval().forward_taps(images.float() * (2 / 255) - 1, ["conv2"])["conv2"].mean(dim=(2, 3))
    torch.testing.assert_close(features, direct, rtol=1e-5, atol=1e-6)
    # test set = training set: with k=1 each image finds itself
    monitor = KnnMonitor(images, labels, images, labels, num_classes=3, tap="conv2", k=1)
    assert monitor.evaluate(encoder) == {"knn_top1": 100.0, "knn_tap": "conv2", "knn_k": 1}
