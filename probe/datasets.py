"""Labelled data sets for evaluation: the probe-side half (subsets, transforms, loaders).

Data sets are named `KIND:PATH` and opened by the one parser shared with `train` (`train.data.specs`: `DataSpec`,
`KINDS`, `open_data`, `LabelledData`, re-exported here; each kind is a file of `train/data/kinds/` or a plugin,
`train.data.kinds`); each kind fixes the evaluation style: `cifar` (native 32x32
images, no augmentation, no dimensionality reduction) or `imagenet` (shorter side to 256, random 224 crops and
flips to train, 10 crops to test). Splits are map-style datasets, except packed shards (`shards:`), which are
streamed: `transformed`, `subset` and `data_loader` serve both.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from common.errors import DataError
from train.data.packed_sets import ShardImages
from train.data.sources import ArrayImages
from train.data.specs import KINDS, DataSpec, LabelledData, open_data

__all__ = ["ArrayImages", "KINDS", "DataSpec", "LabelledData", "Transformed", "data_loader", "open_data",
           "start_epoch", "subset", "transformed"]


def subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A seeded random subset of `size` samples, for quick runs; the whole set when size is None or larger."""
    if size is not None and isinstance(dataset, IterableDataset):
        raise DataError("--limit-train/--limit-test need random access, which shards: data (streamed) does not "
                        "have; pack a smaller split to probe on fewer images")
    if size is None or size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist()
    return torch.utils.data.Subset(dataset, indices)


def transformed(dataset: Dataset, transform) -> Dataset:
    """`dataset` with `transform` applied to each image, for map-style and streamed splits alike."""
    if isinstance(dataset, ShardImages):
        return dataset.with_transform(transform)
    return Transformed(dataset, transform)


def data_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, workers: int = 0, seed: int = 0,
                drop_last: bool | None = None) -> DataLoader:
    """Batches of `dataset`, shuffled each epoch when asked (drop_last defaults to `shuffle`: training loaders,
    unless the whole set is smaller than one batch).

    A streamed split cannot be shuffled by index: it shuffles its shard order and a sample buffer, re-seeded by
    `start_epoch`, and its workers are not kept across epochs so that the new epoch reaches them.
    """
    drop_last = shuffle if drop_last is None else drop_last
    streamed = isinstance(dataset, ShardImages)
    if not streamed and len(dataset) < batch_size:
        drop_last = False  # else a set smaller than one batch trains nothing; the feature cache does the same
    if streamed and shuffle:
        dataset = dataset.shuffled(seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and not streamed, num_workers=workers,
                      drop_last=drop_last, generator=generator, persistent_workers=workers > 0 and not streamed)


def start_epoch(loader: DataLoader, epoch: int) -> None:
    """Re-seed a streamed split's order for `epoch` (map-style loaders reshuffle by themselves)."""
    if isinstance(loader.dataset, ShardImages):
        loader.dataset.set_epoch(epoch)


class Transformed(Dataset):
    """A view of a (PIL image, label) data set with `transform` applied to the image."""

    def __init__(self, base: Dataset, transform):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label
