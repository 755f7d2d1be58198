"""A run folder's checkpoint.pt is read without running anything it names, and an unreadable one is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


class MarkerPayload:
    """Unpickled by a trusting reader, this creates `marker` (a harmless stand-in for `os.system`)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _train(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "train.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.mark.parametrize("content", ["crafted", "random", "empty"])
def test_resume_from_a_crafted_or_unreadable_checkpoint_is_one_line(tiny_set, tmp_path, content):
    run, marker = tmp_path / "run", tmp_path / "marker"
    run.mkdir()
    ckpt = run / "checkpoint.pt"
    if content == "crafted":
        torch.save({"format": "single-image-ssl/checkpoint", "version": 1, "method": "rotnet",
                    "config": {"seed": MarkerPayload(marker)}}, ckpt)
    else:
        ckpt.write_bytes(os.urandom(2048) if content == "random" else b"")
    before = ckpt.read_bytes()
    proc = _train("rotnet", tiny_set, "--out", run, "--resume", "--arch", "cifar", "--device", "cpu",
                  "--workers", "0", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {ckpt}: "), lines
    if content == "crafted":
        assert "refused, the file names posix.mkdir" in lines[0]
    else:
        assert "not a readable checkpoint" in lines[0]
    assert "weights_only" not in lines[0]
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"] and ckpt.read_bytes() == before
