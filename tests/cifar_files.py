"""Small CIFAR-10 / CIFAR-100 pickle folders of random pixels and labels, for the end-to-end tests that train and
probe on them (the experiments' tests share them; the real sets are not on every machine), and one smoke-preset
run of `experiments/reproduce.py` on such a folder."""

import pickle
import subprocess
import sys
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


def smoke_reproduction(target: str, tmp_path: Path) -> tuple[list[str], Path, subprocess.CompletedProcess]:
    """`reproduce.py TARGET --preset smoke` on Image B and a toy CIFAR-10 folder in tmp_path, on the CPU: the command
    (to run again), the work folder and the first run's outcome."""
    from pipeline.sources import default_pool

    data = write_cifar10(tmp_path)
    work = tmp_path / "work"
    script = Path(__file__).resolve().parents[1] / "experiments" / "reproduce.py"
    cmd = [sys.executable, str(script), target, "--preset", "smoke", "--work", str(work),
           "--src", str(default_pool()[1]), "--data", f"cifar10:{data}", "--device", "cpu"]
    return cmd, work, subprocess.run(cmd, capture_output=True, text=True, timeout=900)
