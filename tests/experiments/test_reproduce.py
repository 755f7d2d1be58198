"""The end-to-end reproduction runs render -> train -> probe -> report, and resumes by skipping finished stages."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.sources import default_pool

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_cifar10_reproduction_end_to_end_and_resume(tmp_path):
    data = write_cifar10(tmp_path)
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "experiments" / "reproduce.py"), "cifar10", "--preset", "smoke",
           "--work", str(work), "--src", str(default_pool()[1]), "--data", f"cifar10:{data}", "--device", "cpu"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = (work / "report-cifar10.md").read_text()
    assert "preset: **smoke**" in report and "| train-monogan |" in report and "MonoGAN" in report
    assert (work / "report-cifar10-probe.png").exists()
    for name in ("monogan", "rotnet", "deepcluster", "supervised", "random", "random-leaky"):
        results = json.loads((work / "probes" / name / "results.json").read_text())
        assert set(results["layers"]) == {"conv1", "conv2", "conv3", "conv4"}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert again.stdout.count("skipped") == 11  # 1 render, 4 trainings, 6 probes
