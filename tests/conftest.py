"""The suite's one test infrastructure: shared session fixtures, toy data writers, the run-config factory, the
kill-and-resume helper, and the hooks every test runs under.

Everything a test needs more than once is defined here once (tests/test_conventions.py refuses a test file that
defines its own): test modules take the fixtures by name and import the plain helpers with
``from ..conftest import NAME`` (``from .conftest`` at the top level of ``tests/``).

The suite runs in parallel (pytest-xdist, ``-n auto``): session fixtures are built once per worker, so each is kept
to a second or two, and the few expensive end-to-end runs are shared by tests marked with one ``xdist_group``.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_patches=256, size=32, shard_size=64)  # the tiny set: 256 32 px patches in 4 shards of 64
# Tests that start torchrun run one at a time, on one worker: two `--standalone` rendezvous at once can take the same
# free port on a loaded machine (a rank then aborted: "terminate called without an active exception")
TORCHRUN = pytest.mark.xdist_group("torchrun")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one thread (torch and faiss): the suite's workers already use every core, and a second waiting
    OpenMP thread on a shared core stalls each step."""
    import faiss

    previous, previous_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    faiss.omp_set_num_threads(previous_faiss)


# ---------------------------------------------------------------------------------------------------------------
# rendered sets


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    """A real photograph (scikit-image's CC0 'coffee', 600x400), copied so tests may name it freely."""
    from pipeline.sources import default_pool

    path = tmp_path_factory.mktemp("src") / "coffee.png"
    path.write_bytes(default_pool()[1].read_bytes())
    return path


def render_tiny(folder: Path, photo: Path, **changes) -> Path:
    """The tiny set's render (TINY, seed 0, one worker) into `folder`, with `changes` to its configuration."""
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    render_set(folder, RenderConfig(**{**TINY, **changes}), sources=[photo], workers=1, log=lambda *a, **k: None)
    return folder


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory, photo) -> Path:
    """TINY rendered from the photo: the one rendered set of the suite (read-only: copy it to change it)."""
    return render_tiny(tmp_path_factory.mktemp("sets") / "tiny", photo)


@pytest.fixture(scope="session")
def held_out_set(tmp_path_factory, photo) -> Path:
    """128 patches rendered with another seed: samples the tiny set never saw."""
    return render_tiny(tmp_path_factory.mktemp("sets") / "held", photo, n_patches=128, seed=1)


def bench_script(name: str):
    """A bench/ script loaded as a module (bench/ is not a package), to test its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------
# toy labelled data: CIFAR pickles, ImageFolder trees, tarballs


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def write_pickle(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(payload, f)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> Path:
    """A cifar-10-batches-py folder under `root`: 5 training batches of `per_batch` random images, `test` test
    images, labels cycling through the 10 classes."""
    folder = root / "cifar-10-batches-py"
    write_pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch})
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5", "data": cifar_rows(per_batch, i),
            "labels": [(i + j) % 10 for j in range(per_batch)]})
    write_pickle(folder / "test_batch", {"data": cifar_rows(test, 99), "labels": [j % 10 for j in range(test)]})
    return folder


def write_cifar100(root: Path, train: int = 8, test: int = 4) -> Path:
    """A cifar-100-python folder under `root` of random images, fine labels cycling through the 100 classes."""
    folder = root / "cifar-100-python"
    write_pickle(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                                   "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    for name, count in (("train", train), ("test", test)):
        write_pickle(folder / name, {"data": cifar_rows(count, count), "fine_labels": [j % 100 for j in range(count)],
                                     "coarse_labels": [j % 20 for j in range(count)]})
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
    """The writers above as one namespace, for tests that take them as a fixture."""
    return SimpleNamespace(cifar10=write_cifar10, cifar100=write_cifar100, image_tree=write_image_tree,
                           tarball=write_tarball, pickle=write_pickle, cifar_rows=cifar_rows)


# ---------------------------------------------------------------------------------------------------------------
# training runs


def train_config(method: str, data, out, **changes):
    """A TrainConfig for a small CPU run of `method`: the cifar encoder, batch 16, no loader workers, no progress
    bar, the method's small options; `changes` override any field (``options=`` replaces the small options)."""
    from train.methods import get_method
    from train.run.loop import TrainConfig

    # device pinned: on a GPU machine "auto" would run these CPU checks on CUDA (tests marked cuda cover it)
    base = dict(method=method, data=str(data), out=str(out), arch="cifar", batch_size=16, epochs=100, device="cpu",
                workers=0, progress=False, log_every=4, ckpt_every=8, shuffle_buffer=64,
                options=dict(get_method(method).small_options))
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="session")
def trained_encoder(tmp_path_factory, tiny_set) -> Callable[[str], Path]:
    """``trained_encoder(method)``: the run folder of a 2-step run of a rendered-set method on the tiny set, trained
    once per session and worker. Read-only: copy the folder to change it."""
    from train.run.loop import train

    runs: dict[str, Path] = {}

    def run_folder(method: str) -> Path:
        if method not in runs:
            out = tmp_path_factory.mktemp("trained") / method
            train(train_config(method, tiny_set, out, max_steps=2))
            runs[method] = out
        return runs[method]

    return run_folder


def stop_when(proc: subprocess.Popen, ready: Callable[[], bool], signum: int = signal.SIGKILL, *,
              group: bool = False, within_s: float = 240.0) -> None:
    """The kill-and-resume helper: poll until `ready()` (or the process ends, or `within_s` passes), then send
    `signum` to the process (to its whole process group with `group`, for a run started with start_new_session)."""
    deadline = time.time() + within_s
    while proc.poll() is None and time.time() < deadline:
        if ready():
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signum) if group else proc.send_signal(signum)


def python_cli(module: str, *args, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    """``python -m MODULE ARGS`` from the repository, on one thread, output captured as text."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def target_smoke(tmp_path_factory, target: str, phases: list[tuple[str, str | None]]) -> SimpleNamespace:
    """``reproduce.py TARGET --preset smoke`` on an embedded photo as Image B and a toy CIFAR-10, on the CPU, as a
    :class:`StagedRun` in ``phases``: ``.cmd``, ``.work`` and ``.run``."""
    from pipeline.sources import default_pool

    root = tmp_path_factory.mktemp(f"{target}-smoke")
    data = write_cifar10(root, per_batch=40, test=60)
    work = root / "work"
    script = Path(__file__).resolve().parents[1] / "experiments" / "reproduce.py"
    cmd = [sys.executable, str(script), target, "--preset", "smoke",
           "--work", str(work), "--src", str(default_pool()[1]), "--data", f"cifar10:{data}", "--device", "cpu"]
    return SimpleNamespace(cmd=cmd, work=work, run=StagedRun(cmd, phases))


class StagedRun:
    """An end-to-end command (``experiments/reproduce.py TARGET --preset smoke``) run in phases, so that each phase
    is a test of its own on one worker (``xdist_group``) and none takes long: ``upto(NAME)`` runs every phase up
    to NAME not run yet, each as ``CMD --stages PATTERNS`` (PATTERNS None: the whole command), and returns NAME's
    completed process. A test run alone still gets the phases before its own."""

    def __init__(self, cmd: list[str], phases: list[tuple[str, str | None]], timeout: int = 600) -> None:
        self.cmd, self.phases, self.timeout = cmd, phases, timeout
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def upto(self, name: str) -> subprocess.CompletedProcess:
        for phase, patterns in self.phases:
            if phase not in self.done:
                extra = [] if patterns is None else ["--stages", patterns]
                run = subprocess.run([*self.cmd, *extra], capture_output=True, text=True, timeout=self.timeout)
                assert run.returncode == 0, f"{phase}: " + run.stdout[-3000:] + run.stderr[-3000:]
                self.done[phase] = run
            if phase == name:
                return self.done[name]
        raise KeyError(f"no phase {name!r}")
