"""ImageFolder layouts (`ROOT/<class>/<image>`), scanned with checks naming the offending folder or file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from common.errors import DataError
from pipeline.sources import has_image_suffix, open_rgb


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names) and (image path, class index) pairs of an ImageFolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    samples = []
    for index, name in enumerate(classes):
        images = sorted(p for p in (root / name).rglob("*") if _is_image(p))
        if not images:
            raise DataError(f"{root / name}: empty class folder (no image files)")
        samples.extend((path, index) for path in images)
    return classes, samples


def check_same_classes(reference: Path, ref_classes: Sequence[str], other: Path,
                       classes: Sequence[str]) -> None:
    """Refuse a split whose class folders are not exactly the reference's: labels would silently disagree."""
    if list(classes) == list(ref_classes):
        return
    missing = sorted(set(ref_classes) - set(classes))
    extra = sorted(set(classes) - set(ref_classes))
    parts = [f"missing {_some(missing)}" if missing else "", f"extra {_some(extra)}" if extra else ""]
    detail = "; ".join(p for p in parts if p) or "same names, different order"
    raise DataError(f"{other}: class folders do not match {reference} ({detail})")


TEST_FOLDERS = ("val", "test")  # the held-out split beside train/, in the order looked for


def folder_splits(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Classes and the (image path, class index) samples of ROOT/train/ and ROOT/val/ (or ROOT/test/), whose class
    folders must match."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if not (root / "train").is_dir():
        raise DataError(f"{root}: missing train/ folder (expected train/<class>/ and val/<class>/)")
    test_root = next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)
    if test_root is None:
        raise DataError(f"{root}: missing val/ (or test/) folder beside train/")
    classes, train = scan_image_folder(root / "train")
    test_classes, test = scan_image_folder(test_root)
    check_same_classes(root / "train", classes, test_root, test_classes)
    return classes, train, test


def load_rgb(path: Path) -> Image.Image:
    """The image at `path` as 8-bit RGB, decoded exactly as `pipeline` decodes (EXIF orientation applied, 16-bit
    scaled rather than clipped, bombs refused), so a file reaches the probe the same way whether it is read from
    a folder or from packed shards; a SourceImageError (a DataError) naming the file when it cannot be used."""
    return open_rgb(path)


class FileImages(Dataset):
    """(PIL image, label) pairs read from files (`probe.datasets.transformed` applies a transform)."""

    def __init__(self, samples: Sequence[tuple[Path, int]], expected_size: int | None = None):
        self.samples = list(samples)
        self.expected_size = expected_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.expected_size is not None and image.size != (self.expected_size, self.expected_size):
            side = self.expected_size
            raise DataError(f"{path}: image is {image.size[0]}x{image.size[1]}, expected {side}x{side}")
        return image, label


def _is_image(path: Path) -> bool:
    return has_image_suffix(path) and not path.name.startswith(".") and path.is_file()


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
