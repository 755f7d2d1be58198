"""Small CIFAR-10 / CIFAR-100 pickle folders of random pixels and labels, for the end-to-end tests that train and
probe on them (the experiments' tests share them; the real sets are not on every machine)."""

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, per_batch: int = 40, test: int = 60) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name, n):
        labels = [int(v) for v in rng.integers(0, 10, n)]
        payload = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": labels}
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f)

    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    for i in range(1, 6):
        dump(f"data_batch_{i}", per_batch)
    dump("test_batch", test)
    return folder


def write_cifar100(root: Path, train: int = 200, test: int = 60) -> Path:
    """A small cifar-100-python folder."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    for name, n in (("train", train), ("test", test)):
        payload = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   "fine_labels": [int(v) for v in rng.integers(0, 100, n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f)
    return folder
