"""A full or failing disk during `train`: one line naming the file, exit 1, and a run that resumes correctly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from train.cli import main

from ..faults import FullDisk, can_mount_tmpfs

REPO = Path(__file__).resolve().parents[2]

ARGS = ["--arch", "cifar", "--batch-size", "16", "--max-steps", "24", "--workers", "0", "--no-progress",
        "--ckpt-every", "8", "--log-every", "4", "--shuffle-buffer", "64", "--head-dim", "64", "--device", "cpu"]


def _train(data, out, *extra):
    return CliRunner().invoke(main, ["rotnet", str(data), "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def reference(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (conftest): another thread count sums in another order
    try:
        result = _train(tiny_set, out)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("target, after, skip", [
    ("checkpoint.pt", 1000, 1),  # the second checkpoint (an epoch end), after the first was written
    ("encoder.pt", 0, 0),  # the first encoder export, at the end of epoch 1
    ("metrics.jsonl", 0, 0),  # a metrics line, half-way into it
    ("config.json", 0, 0),  # before the first step
])
def test_train_on_a_full_disk_is_one_line_and_resumes_to_the_same_weights(tiny_set, tmp_path, monkeypatch,
                                                                          reference, target, after, skip):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        disk = FullDisk(patch, target, after, skip)
        if target == "metrics.jsonl":  # a line of a few bytes gets in, the rest does not
            disk.after = 3
        result = _train(tiny_set, out)
    assert disk.hits >= 1
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {out / target}: No space left on device"
    assert not list(out.glob("*.tmp-*")) if out.exists() else True
    if (out / "metrics.jsonl").exists():  # whole lines only
        for line in (out / "metrics.jsonl").read_text().splitlines():
            json.loads(line)
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    again = _train(tiny_set, out, *resume)
    assert again.exit_code == 0, again.output
    done = torch.load(out / "checkpoint.pt", weights_only=True)
    assert done["step"] == reference["step"] == 24
    for name, value in reference["model"].items():
        assert torch.equal(done["model"][name], value), name
    assert (out / "encoder.pt").exists()


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_train_on_a_real_full_tmpfs_then_grown_resumes(tiny_set, tmp_path):
    """A 40 MiB tmpfs holds the first checkpoint (25 MB) but not a second one beside it: one line, then grown,
    `--resume` finishes the run."""
    mount, out = tmp_path / "mnt", tmp_path / "mnt" / "run"
    mount.mkdir()
    steps = [a if a != "24" else "16" for a in ARGS]
    train = " ".join([sys.executable, "-m", "train.cli", "rotnet", str(tiny_set), "--out", str(out), *steps])
    script = (f"mount -t tmpfs -o size=40m tmpfs {mount} && {{ {train} 2>&1 | tail -1; }}; ls {out}; "
              f"mount -o remount,size=200m {mount} && {train} --resume 2>&1 | tail -1")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=env)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Error: {out / 'checkpoint.pt'}: No space left on device", proc.stdout + proc.stderr
    assert lines[1:4] == ["checkpoint.pt", "config.json", "metrics.jsonl"], proc.stdout  # no temporary left
    assert lines[-1].startswith("done: 16 steps"), proc.stdout + proc.stderr
