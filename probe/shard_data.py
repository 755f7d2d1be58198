"""Labelled sets packed as shards (`pipeline pack`), streamed rather than read by index: `--data shards:LOCATION`.

LOCATION holds two packed splits, `train/` and `val/` (or `test/`): folders, or an http(s) URL base under which
`train/manifest.json` and its shards are served, so a cluster can probe on ImageNet kept in object storage
without copying it first. Samples come from `pipeline.shards.open_shards`, which splits shards across DataLoader
workers and raises on a torn or cut shard; sample counts and classes come from the manifests.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator

from torch.utils.data import IterableDataset

from pipeline.errors import ShardSetError
from pipeline.shards import open_shards, verify_quick
from probe.errors import DataError

TRAIN_SPLIT = "train"
TEST_SPLITS = ("val", "test")
# Raw (still encoded) samples held per DataLoader worker to mix the training stream: about 110 KB each for
# ImageNet JPEGs.
SHUFFLE_BUFFER = 2000
# A packed split is in class order (an ImageNet shard of 10,000 holds about 8 classes), so one shard at a time,
# even shuffled, would give batches of a few classes: each worker reads this many shards at once, interleaved.
INTERLEAVE = 8


def is_url(location: str) -> bool:
    return "://" in location


class ShardImages(IterableDataset):
    """(image, label) pairs streamed from one packed split; `transform` maps the PIL image.

    No random access: each epoch reads the shards once, split across DataLoader workers. Call `set_epoch` before
    each epoch to re-seed the shard order and shuffle buffer (workers must not persist across epochs for it to
    reach them).
    """

    def __init__(self, location: str, manifest: dict, transform=None, shuffle_buffer: int = 0, seed: int = 0):
        self.location = location
        self.manifest = manifest
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.manifest["n_samples"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_transform(self, transform) -> ShardImages:
        view = copy.copy(self)
        view.transform = transform
        return view

    def shuffled(self, seed: int, buffer: int = SHUFFLE_BUFFER) -> ShardImages:
        view = copy.copy(self)
        view.shuffle_buffer, view.seed = buffer, seed
        return view

    def __iter__(self) -> Iterator:
        try:
            for sample in _interleave(self._streams()):
                image = sample["image"]
                yield (self.transform(image) if self.transform else image), int(sample["meta"]["label"])
        except ShardSetError as e:  # one line for the probe CLI, also from a DataLoader worker
            raise DataError(e.message) from None

    def _streams(self) -> list:
        """One stream over all shards in order (testing), or INTERLEAVE streams over a partition of them that is
        re-drawn every epoch (training). Each is split across DataLoader workers, not across ranks: DDP probing
        is not supported, and one process must see the whole split."""
        common = {"seed": self.seed, "epoch": self.epoch, "decode": "pil", "split_by_node": False,
                  "manifest": self.manifest}
        if not self.shuffle_buffer:
            return [open_shards(self.location, **common)]
        names = [s["name"] for s in self.manifest["shards"]]
        random.Random(f"{self.seed}/{self.epoch}").shuffle(names)
        groups = [names[g::INTERLEAVE] for g in range(min(INTERLEAVE, len(names)))]
        buffer = max(1, self.shuffle_buffer // len(groups))
        return [open_shards(self.location, shuffle_buffer=buffer, only=set(g), **common) for g in groups]


def _interleave(streams: list) -> Iterator:
    """Round-robin over the streams until all are exhausted."""
    iterators = [iter(s) for s in streams]
    while iterators:
        for it in list(iterators):
            try:
                yield next(it)
            except StopIteration:
                iterators.remove(it)


def open_shard_splits(location: str) -> tuple[list[str], ShardImages, ShardImages]:
    """Classes, train split and test split of the packed pair at `location` (a folder or an http(s) URL base)."""
    base = location.rstrip("/")
    train_location = f"{base}/{TRAIN_SPLIT}"
    train = _labelled_manifest(train_location)
    test_location, test = _test_split(base)
    if test["classes"] != train["classes"]:
        missing = sorted(set(train["classes"]) - set(test["classes"]))
        extra = sorted(set(test["classes"]) - set(train["classes"]))
        detail = "; ".join(filter(None, [f"missing {', '.join(missing[:5])}" if missing else "",
                                         f"extra {', '.join(extra[:5])}" if extra else ""]))
        raise DataError(f"{test_location}: classes do not match {train_location} "
                        f"({detail or 'same names, different order'})")
    return list(train["classes"]), ShardImages(train_location, train), ShardImages(test_location, test)


def _test_split(base: str) -> tuple[str, dict]:
    errors = []
    for name in TEST_SPLITS:
        try:
            return f"{base}/{name}", _labelled_manifest(f"{base}/{name}")
        except DataError as e:
            errors.append(str(e))
    raise DataError(f"{base}: no packed val/ or test/ split beside train/ ({errors[0]})")


def _labelled_manifest(location: str) -> dict:
    try:
        manifest = verify_quick(location)  # complete, and (in a folder) every shard of its listed size
    except ShardSetError as e:
        raise DataError(f"{e.message} (expected a split packed by `pipeline pack SRC --out {location}`)") from None
    if manifest.get("kind") != "labelled" or not manifest.get("classes"):
        raise DataError(f"{location}: a rendered set without labels, not a packed labelled split "
                        f"(pipeline pack SRC --out {location})")
    return manifest
