"""CIFAR-10 and CIFAR-100 in their python pickle layout (`cifar-10-batches-py`, `cifar-100-python`).

These are the files torchvision reads; they are read here directly (no download, and no md5 check: users' copies,
re-pickled or subsetted, are legitimate) into uint8 arrays. `train supervised` and `probe` both use this reader.
Unpickling executes code from the file, as torchvision's reader does: only point this at CIFAR files you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.errors import DataError

IMAGE_SIDE = 32
_PIXELS = 3 * IMAGE_SIDE * IMAGE_SIDE


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    names_key: str
    labels_key: str


LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        names_key="label_names",
        labels_key="labels",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
    ),
}


@dataclass(frozen=True)
class CifarSplit:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB
    labels: np.ndarray  # (N,) int64


def read_cifar(path: Path, variant: str) -> tuple[CifarSplit, CifarSplit, list[str]]:
    """Train split, test split and class names of the CIFAR pickles at `path`.

    `path` is the pickle folder itself (`cifar-10-batches-py`) or the folder that holds it.
    """
    layout = LAYOUTS[variant]
    folder = _find_folder(Path(path), layout)
    classes = [_text(name) for name in _field(_unpickle(folder / layout.meta_file), layout.names_key,
                                               folder / layout.meta_file)]
    train = _concat([_read_batch(folder / name, layout, len(classes)) for name in layout.train_files])
    test = _read_batch(folder / layout.test_file, layout, len(classes))
    return train, test, classes


def _find_folder(path: Path, layout: CifarLayout) -> Path:
    for candidate in (path, path / layout.folder):
        if (candidate / layout.meta_file).is_file():
            return candidate
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    expected = ", ".join((*layout.train_files, layout.test_file, layout.meta_file))
    raise DataError(f"{path}: not a CIFAR pickle folder (expected {layout.folder}/ holding {expected})")


def _unpickle(file: Path) -> dict:
    if not file.is_file():
        raise DataError(f"{file}: missing CIFAR pickle")
    try:
        with open(file, "rb") as f:
            # latin1 maps the byte strings of the original python 2 pickles one to one
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:  # a truncated or foreign file can fail in many ways
        raise DataError(f"{file}: unreadable CIFAR pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(entry, dict):
        raise DataError(f"{file}: unreadable CIFAR pickle (holds a {type(entry).__name__}, not a dict)")
    return {_text(key): value for key, value in entry.items()}


def _field(entry: dict, key: str, file: Path):
    if key not in entry:
        raise DataError(f"{file}: CIFAR pickle lacks the field {key!r}")
    return entry[key]


def _read_batch(file: Path, layout: CifarLayout, num_classes: int) -> CifarSplit:
    entry = _unpickle(file)
    data = np.asarray(_field(entry, "data", file))
    labels = np.asarray(_field(entry, layout.labels_key, file), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{file}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, {_PIXELS})")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{file}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{file}: labels outside 0..{num_classes - 1}")
    # rows are channel-major (1024 red, 1024 green, 1024 blue); images are wanted as HWC
    images = data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), labels)


def _concat(splits: list[CifarSplit]) -> CifarSplit:
    return CifarSplit(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
