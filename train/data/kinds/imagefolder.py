"""`imagefolder:PATH`: ImageNet-style class folders, PATH/train/<class>/ and PATH/val/<class>/ (or test/)."""

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
class ImageFolder(DataKind):
    name = "imagefolder"
    summary = "ImageNet-style class folders: PATH holds train/<class>/ and val/<class>/ (or test/)"
    probe_help = "PATH/train and PATH/val class folders"
    labelled_folder = True

    @classmethod
    def open(cls, spec: DataSpec, cache_dir: Path | None = None) -> LabelledData:
        from train.data.image_folder import FileImages, folder_splits

        classes, train, test = folder_splits(Path(spec.path))
        return LabelledData(spec, classes, FileImages(train), FileImages(test), style=cls.style)

    @classmethod
    def train_split(cls, spec: DataSpec, load_size: int) -> RealSplit:
        """PATH/train/, or PATH itself when it has no train/ (a folder of class folders alone): the self-supervised
        methods need no test split. Files are listed, not opened, and decoded in the loader workers."""
        from train.data.real_sets import TRAIN_FOLDER, folder_split

        path = Path(spec.path)
        if not path.is_dir():
            raise DataError(f"{path}: no such folder")
        return folder_split(path / TRAIN_FOLDER if (path / TRAIN_FOLDER).is_dir() else path, load_size)
