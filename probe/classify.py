"""`probe classify`: the top-1 / top-5 of an encoder's own classifier on a labelled set's test split, no training.

For encoders whose `encoder.pt` carries a classifier (`train supervised`'s teachers, `train distill`'s students).
The test input is what the other probes test on: CIFAR-style sets at their native 32 px; ImageNet-style sets with
the shorter side resized to 256 and the centre 224 px crop (the distillation authors' ImageNet evaluation,
in1k/distill.py: Resize(256), CenterCrop(224)), one crop per image.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.errors import EncoderError
from common.hashing import sha256_files
from probe.datasets import LabelledData, data_loader, subset, transformed
from probe.encoders import RANDOM_PREFIX
from probe.finetune import evaluate_classifier
from probe.protocols import ProbeRun
from probe.transforms import Normalization, cifar_test_transform, imagenet_test_transform
from train.models.encoder_io import EncoderClassifier, load_classifier

RESIZE, CROP = 256, 224
SUBSET_SEED = 1  # the seeded --limit-test subset (the linear probes' test subset seed, protocol seed 0 + 1)


def open_classifier(spec: str) -> tuple[EncoderClassifier, dict[str, Any]]:
    """The encoder and classifier of `spec` (an encoder.pt), with the identity results.json records."""
    if spec.startswith(RANDOM_PREFIX):
        raise EncoderError(f"{spec}: a random encoder carries no classifier; give an encoder.pt of `train "
                           "supervised` or `train distill`")
    model, info = load_classifier(Path(spec), map_location="cpu")
    identity = {"source": spec, "sha256": sha256_files(spec), **{k: v for k, v in info.items()
                                                               if k != "classifier_layers"}}
    return model, identity


def check_fits(model: EncoderClassifier, identity: dict[str, Any], data: LabelledData) -> int:
    """The input size the data is tested at, refused (one line) when the encoder takes another or its classifier
    has another number of classes than the data."""
    size = 32 if data.style == "cifar" else CROP
    source = identity["source"]
    if model.input_size != size:
        raise EncoderError(f"{source}: architecture {identity['arch']!r} takes {model.input_size} px input but "
                           f"{data.spec.kind} data is tested at {size} px")
    if identity["num_classes"] != len(data.classes):
        raise EncoderError(f"{source}: its classifier has {identity['num_classes']} classes, {data.spec.kind} data "
                           f"has {len(data.classes)}")
    return size


def run_classify(model: EncoderClassifier, identity: dict[str, Any], data: LabelledData,
                 normalization: Normalization, run: ProbeRun, batch_size: int) -> dict[str, Any]:
    """Score the classifier on the test split; the results fields (scores, protocol, data used, timings)."""
    started = time.perf_counter()
    size = check_fits(model, identity, data)
    if data.style == "cifar":
        transform = cifar_test_transform(normalization)
    else:
        transform = imagenet_test_transform(normalization, RESIZE, CROP, ten_crop=False)
    loader = data_loader(transformed(subset(data.test, run.limit_test, SUBSET_SEED), transform), batch_size,
                         workers=run.workers)
    scores = evaluate_classifier(model.to(run.device), loader, run.device, run.progress)
    protocol = {"input_size": size, "test_crop": "native" if data.style == "cifar" else f"centre {CROP} of {RESIZE}",
                "normalization": asdict(normalization), "batch_size": batch_size}
    return {"scores": scores, "protocol": protocol, "data_used": {"test_used": len(loader.dataset)},
            "timings": {"total_s": time.perf_counter() - started}}
