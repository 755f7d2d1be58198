"""Helpers of the pipeline tests: the pipeline CLI in a subprocess, a folder's set files, an image saver."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.name == "manifest.json" or p.suffix == ".tar"}


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path
