"""Labelled data sets for evaluation, named on the command line as `KIND:PATH`.

Each kind also fixes the evaluation style: `cifar` (native 32x32 images, no augmentation, no dimensionality
reduction) or `imagenet` (shorter side to 256, random 224 crops and flips to train, 10 crops to test).
Splits are map-style datasets, except packed shards (`shards:`), which are streamed: `transformed`, `subset` and
`data_loader` serve both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pipeline.errors import DataError
from pipeline.shard_format import is_url
from probe.archive import default_cache_dir, extracted
from probe.image_folder import FileImages, check_same_classes, scan_image_folder
from probe.shard_data import ShardImages, is_split_list, open_shard_splits
from train.cifar_pickle import IMAGE_SIDE, read_cifar
from train.data import ArrayImages

KINDS = {
    "cifar10": "CIFAR-10 python pickles: PATH is cifar-10-batches-py/ or the folder holding it",
    "cifar100": "CIFAR-100 python pickles: PATH is cifar-100-python/ or the folder holding it",
    "cifar10-jpg": "CIFAR-10 as JPEG class folders: PATH holds train.tar.gz and test.tar.gz "
    "(extracted once into the cache folder) or train/ and test/",
    "imagefolder": "ImageNet-style class folders: PATH holds train/<class>/ and val/<class>/ (or test/)",
    "shards": "ImageNet-style splits packed by `pipeline pack`, streamed: PATH (a folder or an http(s) URL) holds "
    "train/ and val/ (or test/) sets, or PATH is 'train=SPLIT;val=SPLIT', each SPLIT a folder, an http(s) URL or a "
    "webdataset URL pattern (brace range, pipe: command) followed by ';train-manifest=M' / ';val-manifest=M'",
}
CIFAR_STYLE_KINDS = frozenset({"cifar10", "cifar100", "cifar10-jpg"})
_TEST_FOLDERS = ("val", "test")


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: Path | str  # a str for an http(s) URL or a shards split list, which a Path would mangle

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        kind, sep, path = text.partition(":")
        if not sep or not path:
            raise DataError(f"{text}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
        if kind not in KINDS:
            raise DataError(f"{text}: unknown data set kind {kind!r}; choose one of {', '.join(KINDS)}")
        return cls(kind, path if is_url(path) or is_split_list(path) else Path(path).expanduser())

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass
class LabelledData:
    """Train and test splits yielding (PIL RGB image, class index), with the class names they share."""

    spec: DataSpec
    classes: list[str]
    train: Dataset
    test: Dataset
    style: str  # "cifar" or "imagenet"
    notes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "path": str(self.spec.path),
            "style": self.style,
            "num_classes": len(self.classes),
            "train_size": len(self.train),
            "test_size": len(self.test),
            **self.notes,
        }


def open_data(spec: DataSpec | str, cache_dir: Path | None = None) -> LabelledData:
    """Open the data set named by `spec`, checking its layout up front."""
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind in ("cifar10", "cifar100"):
        train, test, classes = read_cifar(spec.path, spec.kind)
        return LabelledData(spec, classes, ArrayImages(train.images, train.labels),
                            ArrayImages(test.images, test.labels), style="cifar")
    if spec.kind == "cifar10-jpg":
        root = _cifar_jpg_root(spec.path, cache_dir or default_cache_dir())
        classes, train, test = _folder_splits(root)
        return LabelledData(spec, classes, FileImages(train, expected_size=IMAGE_SIDE),
                            FileImages(test, expected_size=IMAGE_SIDE), style="cifar",
                            notes={"extracted_to": str(root)} if root != spec.path else {})
    if spec.kind == "shards":
        classes, train, test = open_shard_splits(str(spec.path))
        return LabelledData(spec, classes, train, test, style="imagenet",
                            notes={"streamed": True, "train_location": train.location,
                                   "test_location": test.location})
    classes, train, test = _folder_splits(spec.path)
    return LabelledData(spec, classes, FileImages(train), FileImages(test), style="imagenet")


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


def _folder_splits(root: Path) -> tuple[list[str], list, list]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if not (root / "train").is_dir():
        raise DataError(f"{root}: missing train/ folder (expected train/<class>/ and val/<class>/)")
    test_root = next((root / name for name in _TEST_FOLDERS if (root / name).is_dir()), None)
    if test_root is None:
        raise DataError(f"{root}: missing val/ (or test/) folder beside train/")
    classes, train = scan_image_folder(root / "train")
    test_classes, test = scan_image_folder(test_root)
    check_same_classes(root / "train", classes, test_root, test_classes)
    return classes, train, test


def _cifar_jpg_root(path: Path, cache_dir: Path) -> Path:
    """The folder holding train/ and test/: `path` itself, or its tarballs extracted into the cache."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such folder")
    archives = [path / "train.tar.gz", path / "test.tar.gz"]
    missing = [a.name for a in archives if not a.is_file()]
    if missing:
        raise DataError(f"{path}: missing {' and '.join(missing)} (or extracted train/ and test/ folders)")
    return extracted(archives, cache_dir, name="cifar10-jpg")


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
