"""Helpers the three packages share, each defined once: hashing, image suffixes, shard names, array images."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.hashing import BLOCK_SIZE, sha256_bytes, sha256_files
from pipeline.shard_format import SHARD_NAME, shard_index, shard_name
from pipeline.sources import IMAGE_SUFFIXES, discover_sources
from train.data.image_folder import scan_image_folder
from train.data.sources import LabelledSource

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted(p for package in ("common", "pipeline", "train", "probe", "experiments")
                       for p in (REPO / package).rglob("*.py"))


def test_file_hashes_are_of_the_bytes_one_file_after_another(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(bytes(range(256)) * (BLOCK_SIZE // 128 + 3))  # more than two blocks
    second.write_bytes(b"tail")
    assert sha256_files(first) == hashlib.sha256(first.read_bytes()).hexdigest()
    assert sha256_files(first, second) == hashlib.sha256(first.read_bytes() + b"tail").hexdigest()
    assert sha256_bytes(b"tail") == hashlib.sha256(b"tail").hexdigest()


def test_shard_names_and_indices_round_trip():
    assert shard_name(12) == "patches-000012.tar" and shard_index("patches-000012.tar") == 12
    assert SHARD_NAME.search("https://host/set/patches-000003.tar").group(0) == "patches-000003.tar"
    with pytest.raises(ValueError, match="not a shard name"):
        shard_index("../patches-000001.tar")


def test_every_folder_reader_takes_the_same_image_files(tmp_path):
    # render's sources, probe's class folders and train's supervised ImageFolder: one list, IMAGE_SUFFIXES
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
               ".webp": "WEBP", ".gif": "GIF", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM"}
    assert set(formats) == IMAGE_SUFFIXES
    root = tmp_path / "set"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for n, (suffix, fmt) in enumerate(formats.items()):
            mode = "L" if suffix == ".pgm" else "RGB"
            Image.new(mode, (16, 16), 40 * n % 256).save(root / label / f"{n}{suffix.upper()}", fmt)
        (root / label / "notes.txt").write_text("not an image")
    expected = 2 * len(formats)
    assert len(discover_sources([root])) == expected
    assert len(scan_image_folder(root)[1]) == expected
    assert LabelledSource(root, load_size=8).num_samples == expected


@pytest.mark.parametrize("definition", [
    r"^def is_url\(", r"^class \w*ArrayImages\b", r"^IMAGE_SUFFIXES = ", r"re\.compile\(r\"patches-",
    r"iter\(lambda.*read\(",
])
def test_each_shared_helper_is_defined_once_in_package_code(definition):
    assert len(_lines_matching(definition)) == 1, _lines_matching(definition)


def test_files_are_made_durable_only_by_the_atomic_writer():
    # fsync and rename live in common/fileio.py; the one other rename swaps in a whole extracted folder
    assert {f.split(":")[0] for f in _lines_matching(r"os\.(fsync|replace|rename)\(")} == {
        "common/fileio.py", "train/data/archive.py"}


def _lines_matching(pattern: str) -> list[str]:
    return [f"{path.relative_to(REPO)}:{n}" for path in PACKAGE_FILES
            for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line.strip())]


def test_cifar_arrays_are_one_dataset_class_for_train_and_probe(tmp_path):
    from probe.datasets import ArrayImages as ProbeArrayImages
    from train.data.sources import ArrayImages

    assert ProbeArrayImages is ArrayImages
    images = np.zeros((3, 4, 4, 3), np.uint8)
    data = ArrayImages(images, np.array([2, 0, 1]), classes=["x", "y", "z"])
    assert (len(data), data[0][0].size, data[0][1], data.classes) == (3, (4, 4), 2, ["x", "y", "z"])
