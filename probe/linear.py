"""`probe linear`: linear classifiers on the frozen features of every conv layer, all trained in one pass.

The protocol is the paper's (section 4.1, after Zhang et al. 2017 and the released linear-probes code):
BatchNorm absorbed into the trunk, a probe after the ReLU of each block, max-pooling to about 9,600 dimensions
on ImageNet-style data (none on CIFAR), BatchNorm without affine + linear layer, SGD with momentum, 36 epochs,
lr 0.01 divided by 5 at epochs 5, 15 and 25, 10-crop testing on ImageNet-style data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from common.errors import DataError
from probe.datasets import LabelledData, data_loader, start_epoch, subset, transformed
from probe.encoders import Encoder, probing_trunk, require_input_size, require_layers
from probe.feature_cache import FeatureCache
from probe.features import FrozenFeatures, LayerPlan, plan_layers
from probe.fit import fit
from probe.heads import LinearProbes
from probe.protocols import ProbeProtocol, ProbeRun
from probe.results import new_results
from probe.scoring import Tally, average_crops
from probe.transforms import Normalization, cifar_transform, imagenet_test_transform, imagenet_train_transform

Batches = Iterable[tuple[dict[str, Tensor], Tensor]]


@dataclass
class LinearRun:
    """Everything a results file reports about one linear-probe run."""

    plans: list[LayerPlan]
    scores: dict[str, dict[str, float]]
    history: list[dict]
    data: dict
    timings: dict[str, float]
    protocol: dict
    feature_cache_bytes: int | None


@dataclass
class _Feeds:
    """Where the probes' inputs come from: per-epoch training batches and the test batches."""

    train_batches: Callable[[int], Batches]
    steps_per_epoch: int
    test_batches: Batches
    cache_bytes: int | None = None


def run_linear(encoder: Encoder, data: LabelledData, protocol: ProbeProtocol, normalization: Normalization,
               run: ProbeRun = ProbeRun(), layers: list[str] | None = None) -> LinearRun:
    """Train one linear probe per tap (all of them, or `layers`) on the frozen `encoder` (its `for_probing` copy:
    BN absorbed) and test them on `data`."""
    started = time.perf_counter()
    layers = require_layers(encoder, layers)
    cifar_style = data.style == "cifar"
    input_size = 32 if cifar_style else protocol.crop
    require_input_size(encoder, input_size, f"{data.spec.kind} data")

    trunk = probing_trunk(encoder)
    plans = plan_layers(trunk, layers, input_size, reduce=not cifar_style)
    extractor = FrozenFeatures(trunk, plans).to(run.device)
    torch.manual_seed(protocol.seed)
    probes = LinearProbes({p.name: p.dims for p in plans}, len(data.classes)).to(run.device)
    train_set = subset(data.train, run.limit_train, protocol.seed)
    test_set = subset(data.test, run.limit_test, protocol.seed + 1)
    if not isinstance(train_set, IterableDataset) and len(train_set) < 2:
        raise DataError(f"{data.spec}: {len(train_set)} training image(s); the probes' BatchNorm needs at least 2")

    timings = {}
    tick = time.perf_counter()
    feed = _cached_feeds if cifar_style else _streamed_feeds
    feeds = feed(extractor, train_set, test_set, protocol, normalization, run)
    timings["features_s"] = time.perf_counter() - tick  # the whole feature extraction when cached
    tick = time.perf_counter()
    history = train_probes(probes, feeds.train_batches, protocol, feeds.steps_per_epoch, run.progress)
    timings["train_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    scores = evaluate_probes(probes, feeds.test_batches, progress=run.progress)
    timings["test_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    described = data.describe() | {"train_used": len(train_set), "test_used": len(test_set)}
    settings = _protocol_record(protocol, cifar_style, input_size, normalization, layers)
    return LinearRun(plans, scores, history, described, timings, settings, feeds.cache_bytes)


def _cached_feeds(extractor: FrozenFeatures, train_set, test_set, protocol: ProbeProtocol,
                  normalization: Normalization, run: ProbeRun) -> _Feeds:
    """CIFAR: no random crops, so each image's features never change; compute them once, then reuse. With
    `cifar_flip` the mirrored training images are cached too, and every epoch draws one view per sample."""
    to_tensor = cifar_transform(normalization)

    def cache(dataset, transform, desc: str) -> FeatureCache:
        return FeatureCache.compute(extractor, _loader(transformed(dataset, transform), protocol, run.workers),
                                    run.device, run.progress, desc=desc)

    train_views = [cache(train_set, to_tensor, "train features")]
    if protocol.cifar_flip:
        train_views.append(cache(train_set, cifar_transform(normalization, mirror=True), "mirrored train features"))
    test_cache = cache(test_set, to_tensor, "test features")
    shuffle = torch.Generator().manual_seed(protocol.seed)

    def train_batches(epoch: int) -> Batches:
        return FeatureCache.batches_of_views(train_views, protocol.batch_size, shuffle, drop_last=True,
                                             device=run.device)

    return _Feeds(train_batches, train_views[0].num_batches(protocol.batch_size, drop_last=True),
                  test_cache.batches(protocol.batch_size, device=run.device),
                  cache_bytes=sum(c.nbytes for c in train_views) + test_cache.nbytes)


def _streamed_feeds(extractor: FrozenFeatures, train_set, test_set, protocol: ProbeProtocol,
                    normalization: Normalization, run: ProbeRun) -> _Feeds:
    """ImageNet style: fresh random crops every epoch, so features are computed batch by batch."""
    train_loader = _loader(transformed(train_set, imagenet_train_transform(
        normalization, protocol.resize, protocol.crop)), protocol, run.workers, shuffle=True)
    crops = 10 if protocol.ten_crop else 1
    test_loader = _loader(transformed(test_set, imagenet_test_transform(
        normalization, protocol.resize, protocol.crop, protocol.ten_crop)), protocol, run.workers,
        batch_size=max(1, protocol.batch_size // crops))  # as many images per forward as in training

    def train_batches(epoch: int) -> Batches:
        start_epoch(train_loader, epoch)
        return _streamed(extractor, train_loader, run.device)

    return _Feeds(train_batches, len(train_loader), _streamed(extractor, test_loader, run.device))


def _protocol_record(protocol: ProbeProtocol, cifar_style: bool, input_size: int,
                     normalization: Normalization, layers: list[str]) -> dict:
    """The protocol as run, for results.json: the settings plus what the data set's style implies."""
    record = asdict(protocol) | {
        "input_size": input_size,
        "bn_absorbed": True,
        "pooling": "none (CIFAR protocol)" if cifar_style else "adaptive max-pooling",
        "probe": "BatchNorm1d(affine=False) + Linear",
        "optimizer": "SGD",
        "ten_crop": protocol.ten_crop and not cifar_style,
        "crop_averaging": "mean of softmax" if protocol.ten_crop and not cifar_style else None,
        "feature_cache": cifar_style,
        "cifar_flip": protocol.cifar_flip and cifar_style,
        "normalization": asdict(normalization),
        "layers": layers,
    }
    if cifar_style:  # native 32x32 images: no resizing or cropping
        record.pop("resize")
        record.pop("crop")
    return record


def train_probes(probes: LinearProbes, batches_for_epoch: Callable[[int], Batches], protocol: ProbeProtocol,
                 steps_per_epoch: int | None = None, progress: bool = True) -> list[dict]:
    """SGD on all probes at once (:func:`probe.fit.fit`, one summed loss)."""
    return fit(probes, probes.parameters(), batches_for_epoch, protocol, steps_per_epoch, progress)


@torch.no_grad()
def evaluate_probes(probes: LinearProbes, batches: Batches,
                    progress: bool = True) -> dict[str, dict[str, float]]:
    """Top-1 / top-5 (%) per probe; rows that are several crops of one image are averaged (softmax)."""
    probes.eval()
    tally = Tally(probes.keys())
    for features, labels in tqdm(batches, disable=not progress, leave=False, desc="test"):
        scores = probes(features)
        crops = next(iter(scores.values())).shape[0] // labels.shape[0]
        tally.add({name: average_crops(s, crops) for name, s in scores.items()}, labels)
    return tally.summary(with_loss=False)


def _streamed(extractor: FrozenFeatures, loader: DataLoader, device: str) -> Iterator[tuple[dict, Tensor]]:
    """Features of each batch from one trunk forward; (B, crops, 3, H, W) batches flattened image-major."""
    for images, labels in loader:
        images = images.to(device)
        if images.dim() == 5:
            images = images.flatten(0, 1)
        yield extractor(images), labels.to(device)


def _loader(dataset, protocol: ProbeProtocol, workers: int, shuffle: bool = False,
            batch_size: int | None = None) -> DataLoader:
    return data_loader(dataset, batch_size or protocol.batch_size, shuffle=shuffle, workers=workers,
                       seed=protocol.seed)


def linear_results(encoder: Encoder, run: LinearRun, device: str, command: str | None = None) -> dict:
    """The `results.json` payload of a linear-probe run."""
    results = new_results("linear", encoder.identity, run.data, run.protocol, device, command)
    results["layers"] = {p.name: {**run.scores[p.name], **p.to_dict()} for p in run.plans}
    results["timings"] = run.timings
    results["feature_cache_bytes"] = run.feature_cache_bytes
    results["history"] = run.history
    return results
