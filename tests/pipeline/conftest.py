import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import RenderConfig
from pipeline.render import render_set

TINY = dict(n_patches=240, size=32, shard_size=50)


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    """A real photograph (scikit-image's CC0 'coffee', 600x400), copied so tests may name it freely."""
    from pipeline.sources import default_pool

    path = tmp_path_factory.mktemp("src") / "coffee.png"
    path.write_bytes(default_pool()[1].read_bytes())
    return path


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory, photo) -> Path:
    out = tmp_path_factory.mktemp("sets") / "tiny"
    render_set(out, RenderConfig(**TINY), sources=[photo], workers=1)
    return out


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
