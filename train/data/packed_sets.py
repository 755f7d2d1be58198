"""Labelled sets packed as shards (`pipeline pack`), streamed rather than read by index: `--data shards:LOCATION`.

LOCATION holds two packed splits, `train/` and `val/` (or `test/`): folders, or an http(s) URL base under which
`train/manifest.json` and its shards are served, so a cluster can probe on ImageNet kept in object storage
without copying it first. Or LOCATION names each split on its own, `train=SPLIT;val=SPLIT`, SPLIT a folder, an
http(s) URL, or a webdataset URL pattern (brace range, `pipe:` command) with its manifest in `train-manifest=` /
`val-manifest=`. Fields are separated by `;` since a pattern may hold commas (brace lists `{a,b}`), `=` and
spaces; a field not starting with one of the four names is refused, so a `;` inside a command is an error, never
a guess. Samples come from `pipeline.shard_reader.open_shards`, which splits shards across DataLoader workers and
raises on a torn or cut shard; sample counts and classes come from the manifests.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Collection, Iterator
from pathlib import Path

from torch.utils.data import IterableDataset

from common.errors import DataError, ShardSetError
from pipeline.shard_format import is_url, load_manifest
from pipeline.shard_reader import (
    ShardPipeline,
    check_pattern_covers_manifest,
    is_url_pattern,
    open_shards,
    pattern_urls,
    verify_quick,
)

TRAIN_SPLIT = "train"
TEST_SPLITS = ("val", "test")
# Raw (still encoded) samples held per DataLoader worker to mix the training stream: about 110 KB each for
# ImageNet JPEGs.
SHUFFLE_BUFFER = 2000
# A packed split is in class order (an ImageNet shard of 10,000 holds about 8 classes), so one shard at a time,
# even shuffled, would give batches of a few classes: each worker reads this many shards at once, interleaved.
INTERLEAVE = 8
# The fields of LOCATION when it names each split on its own (`train=...;val=...`).
SPLIT_FIELDS = ("train", "train-manifest", "val", "val-manifest")
FIELD_SEPARATOR = ";"


def is_split_list(location: str) -> bool:
    """`train=...;val=...` rather than the folder or URL base of a packed pair."""
    return location.partition("=")[0].strip() in SPLIT_FIELDS


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
        for sample in _interleave(self._streams()):
            image = sample["image"]
            yield (self.transform(image) if self.transform else image), int(sample["meta"]["label"])

    def _streams(self) -> list:
        """One stream over all shards in order (testing), or INTERLEAVE streams over a partition of them that is
        re-drawn every epoch (training). Each is split across DataLoader workers, not across ranks: DDP probing
        is not supported, and one process must see the whole split."""
        common = {"seed": self.seed, "epoch": self.epoch, "decode": "pil", "split_by_node": False}
        if not self.shuffle_buffer:
            return [open_shards(self.location, manifest=self.manifest, **common)]
        names = [s["name"] for s in self.manifest["shards"]]
        random.Random(f"{self.seed}/{self.epoch}").shuffle(names)
        # a pattern's share is a `::` list of URLs (see _open), which reads as a pattern only with 2 URLs or more
        n_groups = max(1, min(INTERLEAVE, len(names) // 2 if is_url_pattern(self.location) else len(names)))
        groups = [names[g::n_groups] for g in range(n_groups)]
        buffer = max(1, self.shuffle_buffer // len(groups))
        return [self._open(set(g), shuffle_buffer=buffer, **common) for g in groups]

    def _open(self, names: Collection[str], **options) -> ShardPipeline:
        """open_shards over the shards `names` of this split."""
        if not is_url_pattern(self.location):
            return open_shards(self.location, manifest=self.manifest, only=names, **options)
        shards = [s for s in self.manifest["shards"] if s["name"] in names]
        if len(shards) == len(self.manifest["shards"]):
            return open_shards(self.location, manifest=self.manifest, **options)
        # open_shards restricts only a folder or URL to some shards; a pattern's share is the webdataset `::` list
        # of those shards' URLs, checked against the manifest restricted to them
        urls = [u for u in pattern_urls(self.location) if any(s["name"] in u for s in shards)]
        return open_shards("::".join(urls), manifest={**self.manifest, "shards": shards}, **options)


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
    """Classes, train split and test split of the packed pair at `location` (a folder or an http(s) URL base),
    or of the splits that `location` names one by one (`train=...;val=...`)."""
    if is_split_list(location):
        fields = _split_fields(location)
        train_location, train = _named_split(location, fields, TRAIN_SPLIT)
        test_location, test = _named_split(location, fields, "val")
    else:
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


def open_train_split(location: str) -> tuple[str, dict]:
    """The location and checked manifest of the train split alone (what `train` reads of a `shards:` set): the
    `train/` set under a folder or URL base, or the `train=` field of a split list (no test split needed)."""
    if is_split_list(location):
        return _named_split(location, _split_fields(location), TRAIN_SPLIT)
    train_location = f"{location.rstrip('/')}/{TRAIN_SPLIT}"
    return train_location, _labelled_manifest(train_location)


def _split_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for field in filter(None, map(str.strip, text.split(FIELD_SEPARATOR))):
        name, sep, value = field.partition("=")
        name = name.strip()
        if name not in SPLIT_FIELDS or not sep or not value.strip():
            raise DataError(f"{text}: {field!r} is not NAME=VALUE with NAME one of {', '.join(SPLIT_FIELDS)} "
                            f"(fields are separated by {FIELD_SEPARATOR!r}, which a pattern cannot hold)")
        if name in fields:
            raise DataError(f"{text}: {name}= given twice")
        fields[name] = value.strip()
    return fields


def _named_split(text: str, fields: dict[str, str], split: str) -> tuple[str, dict]:
    """The location and checked manifest of the split named by the `split` and `split-manifest` fields."""
    location, manifest_location = fields.get(split), fields.get(f"{split}-manifest")
    if location is None:
        raise DataError(f"{text}: missing {split}=SPLIT (a packed split: folder, http(s) URL, or URL pattern with "
                        f"{split}-manifest=)")
    if not is_url_pattern(location):
        if manifest_location is not None:
            raise DataError(f"{location}: {split}-manifest= goes with a URL pattern; a folder or URL holds its own "
                            f"manifest.json")
        location = _expanded(location)
        return location, _labelled_manifest(location)
    if manifest_location is None:
        raise DataError(f"{location}: a URL pattern needs {split}-manifest= (the split's manifest.json, path or "
                        f"URL) for its sample count, classes and checks")
    manifest_location = _expanded(manifest_location)
    manifest = load_manifest(manifest_location)
    try:
        check_pattern_covers_manifest(pattern_urls(location), manifest)  # a short pattern: a short epoch
    except ShardSetError as e:
        raise ShardSetError(f"{location}: {e.message} ({manifest_location})") from None
    return location, _labels_checked(manifest_location, manifest)


def _expanded(location: str) -> str:
    return location if is_url(location) else str(Path(location).expanduser())


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
        raise ShardSetError(f"{e.message} (expected a split packed by `pipeline pack SRC --out {location}`)") from None
    return _labels_checked(location, manifest)


def _labels_checked(location: str, manifest: dict) -> dict:
    if manifest.get("kind") != "labelled" or not manifest.get("classes"):
        raise DataError(f"{location}: a rendered set without labels, not a packed labelled split "
                        f"(pipeline pack SRC --out {location})")
    return manifest
