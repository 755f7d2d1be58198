"""`cifar10-jpg:PATH`: CIFAR-10 as JPEG class folders, the shared train.tar.gz and test.tar.gz extracted once into the
cache (train.data.archive), or their extracted train/ and test/ folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import DataError
from train.data.kinds import register_kind
from train.data.kinds.base import DataKind
from train.data.specs import DataSpec, LabelledData

if TYPE_CHECKING:
    from train.data.real_sets import RealSplit


@register_kind
class Cifar10Jpg(DataKind):
    name = "cifar10-jpg"
    summary = ("CIFAR-10 as JPEG class folders: PATH holds train.tar.gz and test.tar.gz "
               "(extracted once into the cache folder) or train/ and test/")
    probe_help = "the shared train.tar.gz + test.tar.gz, extracted once into the cache"
    style = "cifar"
    labelled_folder = True

    @classmethod
    def open(cls, spec: DataSpec, cache_dir: Path | None = None) -> LabelledData:
        from train.data.archive import default_cache_dir
        from train.data.cifar_pickle import IMAGE_SIDE
        from train.data.image_folder import FileImages, folder_splits

        root = cifar_jpg_root(Path(spec.path), cache_dir or default_cache_dir())
        classes, train, test = folder_splits(root)
        return LabelledData(spec, classes, FileImages(train, expected_size=IMAGE_SIDE),
                            FileImages(test, expected_size=IMAGE_SIDE), style=cls.style,
                            notes={"extracted_to": str(root)} if root != spec.path else {})

    @classmethod
    def train_split(cls, spec: DataSpec, load_size: int) -> RealSplit:
        from train.data.real_sets import TRAIN_FOLDER, folder_split

        return folder_split(cls.labelled_root(Path(spec.path)) / TRAIN_FOLDER, load_size)

    @classmethod
    def labelled_root(cls, path: Path) -> Path:
        from train.data.archive import default_cache_dir

        return cifar_jpg_root(path, default_cache_dir())


def cifar_jpg_root(path: Path, cache_dir: Path) -> Path:
    """The folder holding train/ and test/: `path` itself, or its tarballs extracted into the cache."""
    from train.data.archive import extracted

    if (path / "train").is_dir() and (path / "test").is_dir():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such folder")
    archives = [path / "train.tar.gz", path / "test.tar.gz"]
    missing = [a.name for a in archives if not a.is_file()]
    if missing:
        raise DataError(f"{path}: missing {' and '.join(missing)} (or extracted train/ and test/ folders)")
    return extracted(archives, cache_dir, name="cifar10-jpg")
