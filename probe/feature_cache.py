"""Features computed once and kept in memory, for protocols whose training inputs are not augmented (CIFAR).

Every epoch then costs only the linear layers instead of a trunk forward over the whole data set.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.memory import check_sample_buffers
from probe.features import FrozenFeatures

_HALF_MAX = torch.finfo(torch.float16).max


class FeatureCache:
    """Per-layer (N, dims) feature matrices on the CPU, with their labels.

    Stored as float16 (half the memory: 2.3 GB instead of 4.6 GB for CIFAR-10 train through the CIFAR
    encoder); a layer whose values would overflow float16 is kept as float32.
    """

    def __init__(self, features: dict[str, Tensor], labels: Tensor):
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(f.element_size() * f.nelement() for f in self.features.values())

    @classmethod
    @torch.no_grad()
    def compute(cls, extractor: FrozenFeatures, loader: DataLoader, device: torch.device | str = "cpu",
                progress: bool = True, desc: str = "features") -> FeatureCache:
        size = len(loader.dataset)  # a labelled set's count from its manifest: checked before it sizes anything
        check_sample_buffers(size, 8, "labels", f"probe {desc}")
        labels = torch.empty(size, dtype=torch.long)
        store: dict[str, Tensor] = {}
        start = 0
        for images, batch_labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
            features = extractor(images.to(device))
            stop = start + batch_labels.shape[0]
            if not store:  # the first batch gives each layer's width (float16 rows)
                check_sample_buffers(size, 8 + 2 * sum(v.shape[1] for v in features.values()), "cached features",
                                     f"probe {desc}")
            for name, value in features.items():
                value = value.cpu()
                if name not in store:
                    store[name] = torch.empty(size, value.shape[1], dtype=torch.float16)
                if store[name].dtype == torch.float16 and value.abs().max() > _HALF_MAX:
                    store[name] = store[name].float()
                store[name][start:stop] = value.to(store[name].dtype)
            labels[start:stop] = batch_labels
            start = stop
        return cls(store, labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False,
                device: torch.device | str = "cpu") -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        """Mini-batches in float32; shuffled when a generator is given, in order otherwise."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else None
        end = len(self) - len(self) % batch_size if drop_last and len(self) >= batch_size else len(self)
        for start in range(0, end, batch_size):
            if order is None:
                rows = slice(start, start + batch_size)
            else:
                rows = order[start:start + batch_size]
            features = {name: f[rows].to(device, torch.float32) for name, f in self.features.items()}
            yield features, self.labels[rows].to(device)

    @staticmethod
    def batches_of_views(views: list[FeatureCache], batch_size: int, generator: torch.Generator,
                         drop_last: bool = False, device: torch.device | str = "cpu",
                         ) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        """Shuffled mini-batches drawing, per sample, one of several caches of the same images (augmented
        views, e.g. the image and its mirror), chosen afresh on every call."""
        n = len(views[0])
        order = torch.randperm(n, generator=generator)
        # one view draws nothing more: the same batches as `batches` with this generator
        pick = torch.randint(0, len(views), (n,), generator=generator) if len(views) > 1 else None
        end = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, end, batch_size):
            rows = order[start:start + batch_size]
            features = {}
            for name, f in views[0].features.items():
                x = f[rows].to(device, torch.float32)
                for v in range(1, len(views)):
                    chosen = (pick[rows] == v).to(device)[:, None]
                    x = torch.where(chosen, views[v].features[name][rows].to(device, torch.float32), x)
                features[name] = x
            yield features, views[0].labels[rows].to(device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        if drop_last and len(self) >= batch_size:
            return len(self) // batch_size
        return -(-len(self) // batch_size)
