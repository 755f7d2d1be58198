"""Readers of the labelled data sets and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ExifTags, Image

from common.errors import DataError
from pipeline.sources import read_rgb
from probe.datasets import DataSpec, open_data
from train.data.cifar_pickle import read_cifar


def test_cifar10_pickles_are_read_as_hwc_images(tmp_path, writers):
    folder = writers.cifar10(tmp_path, per_batch=4, test=6)
    train, test, classes = read_cifar(folder, "cifar10")
    assert classes[:2] == ["airplane", "automobile"] and len(classes) == 10
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (6, 32, 32, 3)
    assert train.labels.tolist()[:4] == [1, 2, 3, 4]  # batch 1 comes first, in file order
    # a row is 1024 red, then 1024 green, then 1024 blue values, each row-major
    row = writers.cifar_rows(4, 1)[2]
    assert train.images[2, 0, 5].tolist() == [row[5], row[1024 + 5], row[2048 + 5]]
    assert train.images[2, 1, 0, 2] == row[2048 + 32]


def test_cifar_kinds_accept_the_parent_folder(tmp_path, writers):
    writers.cifar10(tmp_path)
    writers.cifar100(tmp_path, train=8, test=4)
    c10 = open_data(f"cifar10:{tmp_path}")
    c100 = open_data(f"cifar100:{tmp_path}")
    assert (len(c10.train), len(c10.test), c10.style) == (20, 6, "cifar")
    assert (len(c100.classes), len(c100.train), len(c100.test)) == (100, 8, 4)
    image, label = c100.train[3]
    assert image.size == (32, 32) and label == 3


def test_missing_and_truncated_cifar_pickles_name_the_file(tmp_path, writers):
    folder = writers.cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3: missing CIFAR pickle"):
        open_data(f"cifar10:{folder}")
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"data_batch_3: unreadable CIFAR pickle"):
        open_data(f"cifar10:{folder}")


def test_missing_data_set_is_one_clear_line(tmp_path):
    for spec in (f"cifar10:{tmp_path / 'nowhere'}", f"imagefolder:{tmp_path / 'nowhere'}",
                 f"cifar10-jpg:{tmp_path / 'nowhere'}"):
        with pytest.raises(DataError, match=r"nowhere: no such folder") as err:
            open_data(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"not a CIFAR pickle folder"):
        open_data(f"cifar100:{tmp_path}")
    with pytest.raises(DataError, match=r"unknown data set kind 'mnist'"):
        DataSpec.parse("mnist:/data")


def test_image_folder_reads_both_splits(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    writers.image_tree(tmp_path / "val", {"cat": 1, "dog": 1}, size=40)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    data = open_data(f"imagefolder:{tmp_path}")
    assert data.classes == ["cat", "dog"] and data.style == "imagenet"
    assert (len(data.train), len(data.test)) == (5, 2)
    image, label = data.train[4]
    assert label == 1 and image.mode == "RGB" and image.size == (32, 32)
    assert data.test[0][0].size == (40, 40)


def test_corrupt_image_names_the_file(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 1, "dog": 1})
    writers.image_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    broken = tmp_path / "train" / "dog" / "0000.png"
    broken.write_bytes(broken.read_bytes()[:40])
    data = open_data(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match=r"train/dog/0000.png: not an image file"):
        data.train[1]


def _imagefolder_holding(root, name: str, image: Image.Image, **save) -> tuple:
    """An imagefolder set whose train/a/ holds `image` saved as `name`, beside one ordinary image per split."""
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(root / split / label / "plain.png")
    image.save(root / "train" / "a" / name, **save)
    data = open_data(f"imagefolder:{root}")
    index = [p.name for p, _ in data.train.samples].index(name)
    return data.train[index][0], root / "train" / "a" / name


def test_sixteen_bit_images_are_scaled_as_the_pipeline_scales_them(tmp_path):
    """A 16-bit greyscale PNG must reach the probe as packed shards deliver it, not clipped to white."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image, path = _imagefolder_holding(tmp_path, "deep.png", Image.fromarray(ramp))
    pixels = np.asarray(image)
    assert image.mode == "RGB" and np.array_equal(pixels, read_rgb(path))
    assert 120 < pixels.mean() < 135  # a ramp over the full range: mid-grey on average, not 254.6


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown portrait (rotated 90 degrees)
    image, path = _imagefolder_holding(tmp_path, "turned.jpg", wide, exif=exif.tobytes())
    assert image.size == (20, 40)
    assert np.array_equal(np.asarray(image), read_rgb(path))


def test_plain_jpegs_decode_to_the_pipeline_pixels(tmp_path):
    """The fast path for 8-bit RGB JPEGs without rotation must not change a pixel."""
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    image, path = _imagefolder_holding(tmp_path, "plain.jpg", Image.fromarray(noise), quality=75)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), read_rgb(path))
    path.write_bytes(path.read_bytes()[:200])  # truncated: reported by the pipeline's decoder
    data = open_data(f"imagefolder:{tmp_path}")
    index = [p.name for p, _ in data.train.samples].index("plain.jpg")
    with pytest.raises(DataError, match=r"train/a/plain.jpg: corrupt or truncated image"):
        data.train[index]


def test_empty_class_folder_is_refused(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 1, "dog": 1})
    writers.image_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(DataError, match=r"train/emu: empty class folder"):
        open_data(f"imagefolder:{tmp_path}")


def test_mismatched_class_lists_are_refused(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 1, "dog": 1, "emu": 1})
    writers.image_tree(tmp_path / "val", {"cat": 1, "dog": 1, "yak": 1})
    with pytest.raises(DataError, match=r"val: class folders do not match .*train \(missing emu; extra yak"):
        open_data(f"imagefolder:{tmp_path}")


def test_cifar10_jpg_tarballs_are_extracted_once(tmp_path, writers):
    source = tmp_path / "src"
    writers.image_tree(source / "train", {"cat": 2, "dog": 2})
    writers.image_tree(source / "test", {"cat": 1, "dog": 1})
    shared = tmp_path / "shared"
    shared.mkdir()
    writers.tarball(shared / "train.tar.gz", source / "train", "train")
    writers.tarball(shared / "test.tar.gz", source / "test", "test")
    cache = tmp_path / "cache"
    first = open_data(f"cifar10-jpg:{shared}", cache_dir=cache)
    assert (len(first.train), len(first.test), first.style) == (4, 2, "cifar")
    extracted = first.notes["extracted_to"]
    stamp = (cache / extracted / ".complete").stat().st_mtime_ns
    second = open_data(f"cifar10-jpg:{shared}", cache_dir=cache)
    assert second.notes["extracted_to"] == extracted
    assert (cache / extracted / ".complete").stat().st_mtime_ns == stamp


def test_cifar_style_images_must_be_32px(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 1, "dog": 1}, size=33)
    writers.image_tree(tmp_path / "test", {"cat": 1, "dog": 1})
    data = open_data(f"cifar10-jpg:{tmp_path}")
    with pytest.raises(DataError, match=r"0000.png: image is 33x33, expected 32x32"):
        data.train[0]
    assert isinstance(data.test[0][0], Image.Image)
