"""Data sets named on the command line as `KIND:PATH`: the one parser of `train` and `probe` (`--data`).

`DataSpec.parse` reads the name; `open_data` opens the train and test splits of a labelled set, checking its layout
up front. Each kind also fixes the evaluation style `probe` uses: `cifar` (native 32x32 images, no augmentation, no
dimensionality reduction) or `imagenet` (shorter side to 256, random 224 crops and flips to train, 10 crops to
test). `train` reads the train split of the same specification (`train.data.real_sets`). Splits are map-style datasets,
except packed shards (`shards:`), which are streamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from common.errors import DataError
from pipeline.shard_format import is_url
from train.data.archive import default_cache_dir, extracted
from train.data.cifar_pickle import IMAGE_SIDE, read_cifar
from train.data.image_folder import FileImages, check_same_classes, scan_image_folder
from train.data.packed_sets import is_split_list, open_shard_splits
from train.data.sources import ArrayImages

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
    given: str = field(default="", compare=False)  # PATH as the user wrote it (`~` unexpanded), for artefacts

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        kind, sep, path = text.partition(":")
        if not sep or not path:
            raise DataError(f"{text}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
        if kind not in KINDS:
            raise DataError(f"{text}: unknown data set kind {kind!r}; choose one of {', '.join(KINDS)}")
        return cls(kind, path if is_url(path) or is_split_list(path) else Path(path).expanduser(), path)

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
        """What results.json records of the data. The cifar10-jpg extraction is named by its folder in the cache
        (its archives' digest), not by this machine's absolute path (issue 32); `notes` keep the path in memory."""
        notes = dict(self.notes)
        if "extracted_to" in notes:
            notes["extracted_to"] = Path(notes["extracted_to"]).name
        return {
            "kind": self.spec.kind,
            "path": self.spec.given or str(self.spec.path),
            "style": self.style,
            "num_classes": len(self.classes),
            "train_size": len(self.train),
            "test_size": len(self.test),
            **notes,
        }


def open_data(spec: DataSpec | str, cache_dir: Path | None = None) -> LabelledData:
    """Open the data set named by `spec`, checking its layout up front."""
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind in ("cifar10", "cifar100"):
        train, test, classes = read_cifar(spec.path, spec.kind)
        return LabelledData(spec, classes, ArrayImages(train.images, train.labels),
                            ArrayImages(test.images, test.labels), style="cifar")
    if spec.kind == "cifar10-jpg":
        root = cifar_jpg_root(spec.path, cache_dir or default_cache_dir())
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



def is_data_spec(text: str) -> bool:
    """Whether `text` names a data set as `KIND:PATH` with a known KIND (else, for `train`, a rendered set)."""
    kind, sep, _ = str(text).partition(":")
    return bool(sep) and kind in KINDS


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


def cifar_jpg_root(path: Path, cache_dir: Path) -> Path:
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
