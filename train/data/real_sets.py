"""Real image sets for the self-supervised methods: the train split of a `KIND:PATH` data specification.

`train METHOD DATA` reads, besides a rendered set, the same specifications as `probe --data` (`train.data.specs`):
`imagefolder:`, `cifar10-jpg:` (class folders of image files), `cifar10:` / `cifar100:` (pickles), `shards:`
(a labelled split packed by `pipeline pack`, streamed like a rendered set), and any other registered data kind. Each
kind says how its train split is read (its ``train_split``: `train.data.kinds`), with the readers below: class
folders listed once (`folder_split`), a packed split streamed (`shard_split`), or the (image, label) pairs of its
`open` (`dataset_split`: CIFAR's arrays, a plugin's kind). Labels are kept in `Batch.labels` (an
online probe may use them); the self-supervised methods ignore them.

Each image is brought to the method's loader scale (`Method.real_input_scale`) in the DataLoader workers: its
shorter side resized to `load_size` and its centre `load_size` square kept (batches must stack), so the method's
native augmentation then runs batched on the device exactly as on rendered patches (`train/augment/views.py`). JPEGs are
decoded at reduced size by the decoder's DCT scaling where the target is at most half the source
(`pipeline.sources.decode_rgb(min_side=...)`). The list of files is held once, as one numpy array of encoded
paths (no Python object per file, so forked workers share its pages instead of copying them as reference counts
change); workers receive indices. A file that cannot be decoded stops the epoch with one line naming it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from common.errors import DataError, SourceImageError
from pipeline.shard_format import is_url
from pipeline.shard_reader import ShardPipeline, is_url_pattern, open_shards
from pipeline.sources import decode_rgb
from train.data.image_folder import scan_image_folder
from train.data.packed_sets import open_train_split
from train.data.sources import (
    Batch,
    LabelledImages,
    _loader_generator,
    _raise_unreadable,
    _Unreadable,
    _worker_count,
    collate_labelled,
    content_digest,
)
from train.data.specs import KINDS, DataSpec
from train.process import distributed as D
from train.process.interrupt import quiet_worker_signals

TRAIN_FOLDER = "train"


def real_set_spec(data: str | os.PathLike) -> DataSpec | None:
    """The specification `data` names when it is `KIND:PATH` (a real set); None for a rendered set (a folder, a
    manifest, an http(s) URL or a webdataset URL pattern). A `WORD:...` that is none of these and names no
    existing file is refused with the list of kinds (a misspelt kind must not read as a missing rendered set)."""
    text = str(data)
    kind, sep, _ = text.partition(":")
    if not sep or is_url(text) or is_url_pattern(text) or Path(text).expanduser().exists():
        return None
    if kind in KINDS or re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", kind):
        return DataSpec.parse(text)  # one-line DataError for an unknown kind or an empty path
    return None


def to_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to `size`, centre `size` x `size` square kept (H x W x 3 uint8 in and out): the
    fixed-size image a batch stacks. Area averaging when shrinking 2x or more, else bilinear (CIFAR enlarged too).
    An image already `size` px on its shorter side comes back as a view of `rgb` (the caller copies it once)."""
    height, width = rgb.shape[:2]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    square = rgb[top:top + short, left:left + short]
    if short == size:
        return square
    # area averaging only where it matters: bilinear reads two source pixels per output pixel, enough below a 2x
    # shrink (DCT scaling leaves most JPEGs there), and costs a tenth of INTER_AREA at a fractional factor
    interpolation = cv2.INTER_AREA if short >= 2 * size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def load_square(data: bytes, name: str | Path, size: int, dct_scaling: bool = True) -> Tensor:
    """Encoded image bytes -> uint8 (3, size, size), decoded by the toolkit's strict decoder (EXIF orientation,
    16-bit scaled, bombs refused; a SourceImageError naming `name`) at reduced size where DCT scaling allows
    (`dct_scaling=False`: always in full, for the benchmark's comparison)."""
    rgb, _ = decode_rgb(data, name, min_side=size if dct_scaling else None)
    return _channels_first(to_square(rgb, size))


def _channels_first(rgb: np.ndarray) -> Tensor:
    # numpy's strided copy of a uint8 HWC image to CHW takes half the time of torch's permute().contiguous()
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


class _FileImages(Dataset):
    """(uint8 image, label, index) of image files listed once as encoded paths below `root`."""

    def __init__(self, root: Path, paths: np.ndarray, labels: np.ndarray, size: int) -> None:
        self.root, self.paths, self.labels, self.size = root, paths, labels, size
        self.dct_scaling = True

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int] | _Unreadable:
        path = self.root / os.fsdecode(self.paths[i])
        try:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise SourceImageError(f"{path}: cannot read ({e.strerror or e})") from None
            return load_square(data, path, self.size, self.dct_scaling), int(self.labels[i]), i
        except SourceImageError as e:
            return _Unreadable(str(e))


def _square_tensor(size: int, image: Any) -> Tensor:
    """A CIFAR array image (as ArrayImages gives it) brought to the loader scale, channels first."""
    return _channels_first(to_square(np.asarray(image), size))


def list_files(root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes, the files' paths relative to `root` (one fixed-width bytes array) and their labels."""
    classes, samples = scan_image_folder(root)
    paths = np.array([os.fsencode(p.relative_to(root)) for p, _ in samples])
    labels = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
    return classes, paths, labels


@dataclass
class RealSplit:
    """The train split of a real set as `RealImageSource` serves it (a data kind's ``train_split``): a map-style
    dataset of (uint8 (3, S, S) image, label, index) samples, or the location and manifest of a packed split to
    stream; with its classes and the digest of what it holds (a resumed run must be fed the same images)."""

    classes: list[str]
    digest: str
    dataset: Dataset | None = None
    shards: tuple[str, dict] | None = None

    @property
    def num_samples(self) -> int:
        if self.dataset is not None:
            return len(self.dataset)  # type: ignore[arg-type]
        return sum(int(s["count"]) for s in self.shards[1]["shards"])  # type: ignore[index]


def dataset_split(name: str, dataset: Dataset, classes: list[str], load_size: int) -> RealSplit:
    """A split of (PIL RGB image or H x W x 3 array, label) pairs, each image brought to `load_size` px in the
    workers: what a kind's ``open`` gives, read by the default ``DataKind.train_split`` (CIFAR's arrays, a plugin's
    kind). `name` names the set in the refusal of a streamed split."""
    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        raise DataError(f"{name}: a streamed train split needs its kind's own train_split reader")
    return RealSplit(list(classes), content_digest(dataset),
                     LabelledImages(dataset, functools.partial(_square_tensor, load_size)))


def folder_split(root: Path, load_size: int) -> RealSplit:
    """The class folders below `root`, listed once and decoded in the workers at `load_size` px."""
    classes, paths, labels = list_files(root)
    return RealSplit(classes, _listing_digest(root, paths, labels).hexdigest(),
                     _FileImages(root, paths, labels, load_size))


def shard_split(location: str) -> RealSplit:
    """A packed train split (`pipeline pack`), streamed; its classes and shards' digests from its manifest."""
    location, manifest = open_train_split(location)
    digest = hashlib.sha256(repr([(s["name"], s["sha256"]) for s in manifest["shards"]]).encode())
    return RealSplit(list(manifest["classes"]), digest.hexdigest(), shards=(location, manifest))


class RealImageSource:
    """The train split of a `KIND:PATH` specification, each image brought to `load_size` px in the workers (its
    kind's ``train_split``: train.data.kinds)."""

    def __init__(self, spec: str | DataSpec, load_size: int, shuffle_buffer: int = 1000) -> None:
        self.spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
        self.image_size = load_size
        self.shuffle_buffer = shuffle_buffer
        split = self.spec.data_kind.train_split(self.spec, load_size)
        self.classes = split.classes
        self.dataset: Dataset | None = split.dataset
        self._shards: tuple[str, dict] | None = split.shards
        self.num_samples = split.num_samples
        if self.num_samples <= 0:
            raise DataError(f"{self.spec}: the train split holds no images")
        self.num_classes = len(self.classes)
        self.description = (f"{self.spec} (train split, {self.num_samples} images, {self.num_classes} classes, "
                            f"loaded at {load_size} px)")
        # what the set is wherever it lies: a resumed run must be fed the same images at the same scale
        self.identity = {"kind": self.spec.kind, "num_samples": self.num_samples, "load_size": load_size,
                         "classes": self.classes, "content_sha256": split.digest}

    def loader(self, epoch: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Iterable[Batch]:
        common: dict[str, Any] = dict(batch_size=batch_size, collate_fn=collate_labelled, drop_last=drop_last,
                                      num_workers=_worker_count(workers), pin_memory=pin_memory,
                                      generator=_loader_generator(seed, epoch), worker_init_fn=quiet_worker_signals)
        if self.dataset is not None:
            sampler = DistributedSampler(self.dataset, num_replicas=D.world_size(), rank=D.rank(),
                                         shuffle=shuffle, seed=seed, drop_last=drop_last)
            sampler.set_epoch(epoch)
            return _raise_unreadable(DataLoader(self.dataset, sampler=sampler, **common))
        stream = self._shard_stream(epoch, shuffle, seed)
        return _raise_unreadable(DataLoader(stream, prefetch_factor=4 if common["num_workers"] else None,
                                            **common))

    def _shard_stream(self, epoch: int, shuffle: bool, seed: int) -> ShardPipeline:
        location, manifest = self._shards  # type: ignore[misc]
        size = self.image_size
        pipe = open_shards(location, shuffle_buffer=self.shuffle_buffer if shuffle else 0, seed=seed, epoch=epoch,
                           decode="raw", split_by_node=True, split_by_worker=True, manifest=manifest)
        pipe.append(wds.map(functools.partial(_packed_item, size=size)))
        return pipe


def _packed_item(sample: dict, size: int) -> tuple[Tensor, int, int] | _Unreadable:
    """A packed sample ({'image': bytes, 'meta': {label, path, ...}}) as (uint8 image, label, index)."""
    meta = sample["meta"]
    try:
        return load_square(sample["image"], f"{meta.get('path', sample['key'])}", size), int(meta["label"]), \
            int(sample["index"])
    except SourceImageError as e:
        return _Unreadable(str(e))


def _listing_digest(root: Path, paths: np.ndarray, labels: np.ndarray) -> hashlib._Hash:
    """Each file's path inside the set, size and label, in sample order (as `train.data.sources.LabelledSource`: reading
    every image of ImageNet would cost more than the check is worth; a file replaced by one of another size is
    caught)."""
    digest = hashlib.sha256()
    for rel, label in zip(paths, labels, strict=True):
        digest.update(rel + f"\t{os.stat(root / os.fsdecode(rel)).st_size}\t{label}\n".encode())
    return digest

