"""`probe finetune`: retrain a network on labels starting from an encoder's first layers (Tables 4 and 5).

Table 4 keeps conv1-conv2 frozen and trains the rest (`freeze="conv2"`); Table 5 initialises from them and
trains everything (`freeze="none"`). In both, the layers after `keep` (conv2) start from a fresh, seeded
initialisation: only the early layers carry over from the encoder. The paper gives no fine-tuning schedule;
the defaults are the usual AlexNet ones (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, /10 every 30 epochs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm import tqdm

from common.errors import ToolkitError
from probe.datasets import LabelledData, data_loader, start_epoch, subset, transformed
from probe.encoders import Encoder, require_input_size, require_layers
from probe.fit import SingleOutput, fit
from probe.protocols import FinetuneProtocol, ProbeRun
from probe.scoring import Tally, average_crops
from probe.transforms import (
    Normalization,
    cifar_test_transform,
    imagenet_test_transform,
    imagenet_train_transform,
)
from train.models import build_encoder, default_head, output_shape


class Classifier(nn.Module):
    """Encoder + head on its flattened `forward` output. Frozen taps' modules stay in eval mode (their
    BatchNorm statistics are part of what is kept)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, frozen: Iterable[str] = ()):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen = list(frozen)
        for name in self.frozen:
            encoder.tap_module(name).requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for name in self.frozen:
            self.encoder.tap_module(name).eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder(images).flatten(1))


def build_classifier(encoder: Encoder, num_classes: int, input_size: int,
                     protocol: FinetuneProtocol) -> Classifier:
    """The network to retrain: the encoder's taps up to `keep`, fresh seeded layers after it, and the head
    registered with the architecture (AlexNet's fc6-fc8 for the AlexNet family; one linear layer by default)."""
    names = list(encoder.taps)
    keep = names[-1] if protocol.keep == "all" else require_layers(encoder, [protocol.keep])[0]
    frozen = [] if protocol.freeze == "none" else _up_to(names, require_layers(encoder, [protocol.freeze])[0])
    if frozen and names.index(frozen[-1]) > names.index(keep):
        raise ToolkitError(f"--freeze {protocol.freeze} would freeze freshly initialised layers "
                           f"(only layers up to --keep {keep} come from the encoder)")
    torch.manual_seed(protocol.seed)
    network = build_encoder(encoder.arch, **encoder.identity.get("arch_kwargs", {}))
    for name in _up_to(names, keep):
        network.tap_module(name).load_state_dict(encoder.module.tap_module(name).state_dict())
    dims = math.prod(output_shape(network, input_size))
    head = default_head(encoder.arch)(dims, num_classes)
    return Classifier(network, head, frozen)


def _up_to(names: list[str], last: str) -> list[str]:
    return names[:names.index(last) + 1]


def run_finetune(encoder: Encoder, data: LabelledData, protocol: FinetuneProtocol, normalization: Normalization,
                 run: ProbeRun = ProbeRun()) -> tuple[Classifier, dict]:
    """Retrain and test; returns the network and the results fields (scores, history, timings, protocol)."""
    started = time.perf_counter()
    cifar_style = data.style == "cifar"
    input_size = 32 if cifar_style else protocol.crop
    require_input_size(encoder, input_size, f"{data.spec.kind} data")
    model = build_classifier(encoder, len(data.classes), input_size, protocol).to(run.device)

    if cifar_style:  # the usual CIFAR augmentation: fine-tuning, unlike probing, is not on cached features
        train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                              normalization.to_tensor()])
        test_tf = cifar_test_transform(normalization)
    else:
        train_tf = imagenet_train_transform(normalization, protocol.resize, protocol.crop)
        test_tf = imagenet_test_transform(normalization, protocol.resize, protocol.crop, protocol.ten_crop)
    train_loader = data_loader(transformed(subset(data.train, run.limit_train, protocol.seed), train_tf),
                               protocol.batch_size, shuffle=True, workers=run.workers, seed=protocol.seed)
    crops = 10 if protocol.ten_crop and not cifar_style else 1
    test_loader = data_loader(transformed(subset(data.test, run.limit_test, protocol.seed + 1), test_tf),
                              max(1, protocol.batch_size // crops), workers=run.workers)

    def batches_for_epoch(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        start_epoch(train_loader, epoch)
        return ((images.to(run.device), labels.to(run.device)) for images, labels in train_loader)

    parameters = [p for p in model.parameters() if p.requires_grad]
    history = [row | {"train": row["train"]["model"]}
               for row in fit(SingleOutput(model), parameters, batches_for_epoch, protocol, len(train_loader),
                              run.progress)]
    scores = evaluate_classifier(model, test_loader, run.device, run.progress)
    fields = {
        "scores": scores,
        "history": history,
        "timings": {"total_s": time.perf_counter() - started},
        "protocol": asdict(protocol) | {"input_size": input_size, "frozen": model.frozen,
                                        "normalization": asdict(normalization),
                                        "ten_crop": crops == 10},
        "data_used": {"train_used": len(train_loader.dataset), "test_used": len(test_loader.dataset)},
    }
    return model, fields


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: str, progress: bool = True) -> dict:
    """Top-1 / top-5 (%), averaging the softmax of each image's crops (batches are (B, crops, 3, H, W))."""
    model.eval()
    tally = Tally(["model"])
    for images, labels in tqdm(loader, disable=not progress, leave=False, desc="test"):
        crops = images.shape[1]
        scores = model(images.flatten(0, 1).to(device))
        tally.add({"model": average_crops(scores, crops)}, labels.to(device))
    return tally.summary(with_loss=False)["model"]
