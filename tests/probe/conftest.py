"""Tiny data sets written by the tests themselves: CIFAR pickles, ImageFolder trees, cifar10-jpg tarballs."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _few_threads():
    # the test machine's cores are shared: keep each test on one thread
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def write_pickle(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(payload, f)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> Path:
    """A cifar-10-batches-py folder under `root` with 5 training batches of `per_batch` images each."""
    folder = root / "cifar-10-batches-py"
    write_pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch})
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5", "data": cifar_rows(per_batch, i),
            "labels": [(i + j) % 10 for j in range(per_batch)]})
    write_pickle(folder / "test_batch",
                 {"data": cifar_rows(test, 99), "labels": [j % 10 for j in range(test)]})
    return folder


def write_cifar100(root: Path, train: int = 8, test: int = 4) -> Path:
    folder = root / "cifar-100-python"
    write_pickle(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                                   "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    for name, count in (("train", train), ("test", test)):
        write_pickle(folder / name, {"data": cifar_rows(count, count), "fine_labels": list(range(count)),
                                     "coarse_labels": [0] * count})
    return folder


def write_image_tree(root: Path, classes: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """ROOT/<class>/<i>.png with `classes[name]` random images each."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.png")
    return root


def write_tarball(path: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path


@pytest.fixture
def writers():
    """The writers above, for tests (conftest modules cannot be imported under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(cifar10=write_cifar10, cifar100=write_cifar100, image_tree=write_image_tree,
                           tarball=write_tarball, pickle=write_pickle, cifar_rows=cifar_rows)
