"""Where training batches come from.

* :class:`ShardSource` streams a rendered set through ``pipeline.shard_reader.open_shards`` (the one shard
  reader; this module only batches what it yields).
* :class:`LabelledSource` reads a labelled set (ImageFolder or CIFAR pickle layout, or a data kind's train split)
  for the supervised baseline.
* :class:`TensorSource` serves in-memory uint8 tensors (unit tests, and the benchmark's loader-free figures).

All three yield :class:`Batch` objects holding uint8 (B, 3, H, W) images (augmentation happens later,
batched on the training device), the samples' global indices, and labels where the set has them.
``loader(epoch, ...)`` gives this rank its share of one epoch; every sample is seen once per epoch across
ranks and workers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from common.errors import DataError, SourceImageError
from pipeline.sources import has_image_suffix, open_rgb
from train.data.cifar_pickle import LAYOUTS, read_cifar
from train.process import distributed as D
from train.process.interrupt import quiet_worker_signals


@dataclass
class Batch:
    images: Tensor  # uint8 (B, 3, H, W)
    index: Tensor  # int64 (B,), the sample's global index in the set
    labels: Tensor | None = None  # int64 (B,), labelled sets only

    def to(self, device: torch.device, non_blocking: bool = True) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.index.to(device, non_blocking=non_blocking),
            None if self.labels is None else self.labels.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies, so ``to(device, non_blocking=True)`` overlaps the copy with compute. A DataLoader with
        ``pin_memory=True`` calls this for every batch (objects it does not know are passed on unpinned)."""
        return Batch(self.images.pin_memory(), self.index.pin_memory(),
                     None if self.labels is None else self.labels.pin_memory())

    def __len__(self) -> int:
        return self.images.shape[0]


class Source(Protocol):
    num_samples: int
    image_size: int
    num_classes: int | None
    description: str

    def loader(self, epoch: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Iterable[Batch]: ...


def collate_samples(samples: list[dict[str, Any]]) -> Batch:
    """Batch the reader's sample dicts; ``meta`` (provenance) is dropped, trainers do not need it."""
    images = []
    for s in samples:
        img = s["image"]
        if not isinstance(img, Tensor):  # decode='rgb' gives HxWx3 arrays
            img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        images.append(img)
    index = torch.tensor([int(s["index"]) for s in samples], dtype=torch.int64)
    return Batch(torch.stack(images), index)


def collate_labelled(items: list[tuple[Tensor, int, int] | _Unreadable]) -> Batch | _Unreadable:
    """(uint8 image, label, index) samples -> a labelled Batch, or the first sample that could not be read."""
    unreadable = [x for x in items if isinstance(x, _Unreadable)]
    if unreadable:
        return unreadable[0]
    imgs, labels, idx = zip(*items, strict=True)
    # default_collate stacks into shared memory in a worker: the batch then reaches the trainer without a copy
    return Batch(default_collate(imgs), torch.tensor(idx, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64))


def _loader_generator(seed: int, epoch: int) -> torch.Generator:
    """A DataLoader draws its workers' base seed from this generator; without one it draws from the global
    RNG, so re-creating a loader on resume would shift every later random number and break exact resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch + 17)


def usable_cpus() -> int:
    """CPUs this process may run on (a taskset, cpuset or Slurm allocation counts; ``os.cpu_count()`` would not)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Loader workers for this process: its share of the usable CPUs, split between the processes torchrun starts
    on this node (LOCAL_WORLD_SIZE), less one for the process itself (augmentation, steps), and at least one.

    Every worker holds ``prefetch_factor`` decoded batches in shared memory, so 8 ranks x 4 workers on 16 cores
    also held 4x the batches the CPUs could fill."""
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, usable_cpus() // ranks_here - 1)


def _worker_count(requested: int) -> int:
    return max(0, min(requested, usable_cpus()))


class ShardSource:
    """A rendered set, checked before training starts: a folder, its manifest.json, an http(s) URL of either, or a
    webdataset URL pattern (``pipe:`` command, brace list) with its manifest given separately."""

    num_classes = None

    def __init__(self, location: str | os.PathLike, shuffle_buffer: int = 1000,
                 manifest: str | os.PathLike | None = None) -> None:
        try:
            from pipeline import shard_reader as shards
        except ImportError as e:  # the reader lives in pipeline/; say so instead of a bare traceback
            raise DataError(f"cannot read shards: pipeline.shard_reader is unavailable ({e})") from None
        self._shards = shards
        self.location = str(location)
        self.manifest_location = str(manifest) if manifest is not None else None
        if shards.is_url_pattern(self.location):
            # a webdataset URL pattern (pipe: commands, brace lists): the manifest comes separately
            if manifest is None:
                raise DataError(f"{self.location}: a URL pattern needs --manifest (the set's manifest.json, "
                                f"path or URL) for its sample count and checks")
            manifest = shards.load_manifest(manifest)
            shards.check_pattern_covers_manifest(shards.pattern_urls(self.location), manifest)
        else:
            if not shards.is_url(self.location) and not Path(self.location).exists():
                raise DataError(f"{self.location}: no such rendered set")
            manifest = shards.verify_quick(self.location)  # one-line ShardSetError: empty, incomplete, truncated
        if manifest.get("kind") == "labelled":
            raise DataError(f"{self.location}: a labelled set packed by `pipeline pack` (for `probe --data shards:`), "
                            f"not a set rendered by `pipeline render`")
        self.num_samples = sum(int(s["count"]) for s in manifest["shards"])
        if self.num_samples <= 0:
            raise DataError(f"{self.location}: the set holds no samples")
        cfg = manifest.get("config", {})
        self.image_size = int(cfg.get("size", 0))
        self.render_config = cfg
        self.shuffle_buffer = shuffle_buffer
        self.description = f"{self.location} ({self.num_samples} patches, {self.image_size} px)"
        # what the set is wherever it lies: a resumed run must be fed the same samples (train.run.loop)
        self.identity = {"num_samples": self.num_samples, "render_config": cfg,
                         "sources": [s.get("sha256") for s in manifest.get("sources", [])]}

    def loader(self, epoch: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Iterable[Batch]:
        ds = self._shards.open_shards(
            self.location, shuffle_buffer=self.shuffle_buffer if shuffle else 0, seed=seed, epoch=epoch,
            decode="torch", split_by_node=True, split_by_worker=True, manifest=self.manifest_location,
        )
        return DataLoader(ds, batch_size=batch_size, collate_fn=collate_samples, drop_last=drop_last,
                          num_workers=_worker_count(workers), pin_memory=pin_memory,
                          persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
                          generator=_loader_generator(seed, epoch), worker_init_fn=quiet_worker_signals)


class TensorSource:
    """In-memory uint8 images (N, 3, H, W); shuffled per (seed, epoch), split across ranks like the reader."""

    def __init__(self, images: Tensor, labels: Tensor | None = None, description: str = "tensors") -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("TensorSource takes uint8 images of shape (N, C, H, W)")
        self.images = images
        self.labels = labels
        self.num_samples = images.shape[0]
        self.image_size = images.shape[-1]
        self.num_classes = None if labels is None else int(labels.max()) + 1
        self.description = description
        self.identity = {"num_samples": self.num_samples, "image_size": self.image_size}

    def loader(self, epoch: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        if shuffle:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        order = order[D.rank()::D.world_size()]
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            yield Batch(self.images[idx], idx.clone(), None if self.labels is None else self.labels[idx])


@dataclass
class _Unreadable:
    """Stands in for a sample (and then its batch) whose image could not be decoded. A DataLoader worker re-raises
    an exception as a multi-line traceback dump, so the worker passes the message back as data and the main
    process raises it as the one-line DataError."""

    message: str


class LabelledImages(Dataset):
    """(image, label) pairs of ``base`` as (``transform(image)``, label, index) samples, an unreadable image as an
    _Unreadable that the batch carries back to the main process."""

    def __init__(self, base: Dataset, transform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int] | _Unreadable:
        try:
            img, label = self.base[i]
        except SourceImageError as e:
            return _Unreadable(str(e))
        return self.transform(img), int(label), i


class LabelledSource:
    """A labelled set for the supervised baseline: CIFAR-10/100 (pickle layout) or an ImageFolder tree.

    Workers decode and bring images to a fixed ``load_size`` square (resize of the short side + centre crop)
    as uint8; the method's random crops and flips then run batched on the device like every other method.
    """

    def __init__(self, root: str | os.PathLike, load_size: int, split: str = "train") -> None:
        from torchvision import datasets

        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such labelled data set folder")
        train = split == "train"
        variant = _cifar_variant(root)
        if variant is not None:
            train_split, test_split, classes = read_cifar(root, variant)
            split_arrays = train_split if train else test_split
            base = ArrayImages(split_arrays.images, split_arrays.labels, classes=classes)
            kind = variant.upper().replace("CIFAR", "CIFAR-")
        else:
            folder = root / split if (root / split).is_dir() else root
            try:
                # the renderer's decoder (EXIF orientation, 16-bit scaled rather than clipped, bombs refused, a
                # one-line SourceImageError naming the file) and its image suffixes
                base = datasets.ImageFolder(folder, loader=open_rgb, is_valid_file=has_image_suffix)
            except (FileNotFoundError, RuntimeError) as e:
                raise DataError(f"{folder}: not an ImageFolder or CIFAR layout ({e})") from None
            kind = "ImageFolder"
        if len(base) == 0:
            raise DataError(f"{root}: the labelled set is empty")
        self._serve(base, list(base.classes), load_size, str(root), kind,
                    _content_digest(base, folder if variant is None else None))

    @classmethod
    def from_dataset(cls, base: Dataset, classes: list[str], load_size: int, *, name: str,
                     kind: str) -> LabelledSource:
        """(PIL image, label) pairs of any map-style set (a data kind's train split: `train supervised KIND:PATH`),
        named `name`; its identity digests every image (:func:`content_digest`)."""
        if len(base) == 0:  # type: ignore[arg-type]
            raise DataError(f"{name}: the labelled set is empty")
        source = cls.__new__(cls)
        source._serve(base, list(classes), load_size, name, kind, content_digest(base))
        return source

    def _serve(self, base: Dataset, classes: list[str], load_size: int, name: str, kind: str, digest: str) -> None:
        from torchvision.transforms import v2

        to_uint8 = v2.Compose(
            [v2.PILToTensor(), v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)]
        )
        self.dataset = LabelledImages(base, to_uint8)
        self.num_samples = len(base)  # type: ignore[arg-type]
        self.num_classes = len(classes)
        self.image_size = load_size
        self.description = f"{name} ({kind}, {self.num_samples} images, {self.num_classes} classes)"
        self.identity = {"kind": kind, "num_samples": self.num_samples, "classes": classes,
                         "content_sha256": digest}

    def loader(self, epoch: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Iterable[Batch]:
        sampler = DistributedSampler(self.dataset, num_replicas=D.world_size(), rank=D.rank(),
                                     shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        batches = DataLoader(self.dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_labelled,
                             drop_last=drop_last, num_workers=_worker_count(workers), pin_memory=pin_memory,
                             generator=_loader_generator(seed, epoch), worker_init_fn=quiet_worker_signals)
        return _raise_unreadable(batches)


def _content_digest(base, folder: Path | None) -> str:
    """What a labelled set holds, wherever it lies, so a resumed run is fed the same data: CIFAR's pixels and labels;
    for an ImageFolder each file's path inside the set, size and label, in sample order (reading every image of
    ImageNet would cost more than the check is worth; a file replaced by one of another size is caught)."""
    if folder is None:
        return content_digest(base)
    digest = hashlib.sha256()
    for path, label in base.samples:
        digest.update(f"{Path(path).relative_to(folder).as_posix()}\t{os.stat(path).st_size}\t{label}\n".encode())
    return digest.hexdigest()


def content_digest(base: Dataset) -> str:
    """What a set of (image, label) pairs holds, wherever it lies: in-memory arrays (CIFAR's) digested as they are,
    any other set image by image (its pixels read once, as 8-bit RGB arrays) with its labels."""
    digest = hashlib.sha256()
    if isinstance(base, ArrayImages):
        digest.update(np.ascontiguousarray(base.images).tobytes())
        digest.update(np.asarray(base.labels, np.int64).tobytes())
        return digest.hexdigest()
    for i in range(len(base)):  # type: ignore[arg-type]
        image, label = base[i]
        digest.update(np.ascontiguousarray(np.asarray(image)).tobytes())
        digest.update(np.int64(label).tobytes())
    return digest.hexdigest()


def _raise_unreadable(batches: Iterable[Batch | _Unreadable]) -> Iterator[Batch]:
    for batch in batches:
        if isinstance(batch, _Unreadable):
            raise DataError(batch.message)
        yield batch


def steps_per_epoch(num_samples: int, batch_size: int, world: int) -> int:
    """Batches each rank takes per epoch: equal on all ranks, or DDP collectives would wait forever."""
    return max(1, num_samples // (batch_size * world))


def epoch_batches(source: Source, epoch: int, batch_size: int, n_batches: int, skip: int = 0,
                  **loader_kw: Any) -> Iterator[Batch]:
    """Exactly ``n_batches`` batches for this rank, the first ``skip`` of them dropped (mid-epoch resume).

    A rank whose share of the shards runs out early starts the same epoch's stream again, so all ranks take
    the same number of steps; ``skip`` replays the deterministic stream rather than seeking, so a resumed
    run sees exactly the batches the interrupted one would have.
    """
    produced = 0
    while produced < n_batches:
        got_any = False
        for batch in source.loader(epoch, batch_size, **loader_kw):
            got_any = True
            if produced >= skip:
                yield batch
            produced += 1
            if produced >= n_batches:
                return
        if not got_any:
            raise DataError(f"{source.description}: rank {D.rank()} received no batch of {batch_size} "
                            f"(fewer samples or shards than ranks x batch size?)")



def _cifar_variant(root: Path) -> str | None:
    """'cifar10' / 'cifar100' for a pickle folder or the folder holding one, else None."""
    for variant, layout in LAYOUTS.items():
        if root.name == layout.folder or (root / layout.folder).is_dir() or (root / layout.meta_file).is_file():
            return variant
    return None


class ArrayImages(Dataset):
    """In-memory (N, H, W, 3) uint8 images (CIFAR's arrays) as the (PIL image, label) pairs torchvision's data sets
    give; `classes` names the labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str] | None = None) -> None:
        self.images, self.labels, self.classes = images, labels, list(classes or [])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[index]), int(self.labels[index])
