"""Files a user is handed (CIFAR pickles, encoder.pt) are read without running anything they name.

A crafted file's `__reduce__` would create a marker file when unpickled; each reader must refuse it in one line
naming the file, exit non-zero, write nothing, and leave the marker uncreated.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import DataError
from probe.datasets import open_data
from train.data.cifar_pickle import read_cifar

REPO = Path(__file__).resolve().parents[2]


class MarkerPayload:
    """Unpickled by a trusting reader, this creates `marker` (a harmless stand-in for `os.system`)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def run_cli(package: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", f"{package}.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stdout + proc.stderr
    return lines[0]


# -- CIFAR pickles ----------------------------------------------------------------------------------------------

def _py2_str(b: bytes | str) -> bytes:
    b = b if isinstance(b, bytes) else b.encode("latin1")
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _py2_value(v) -> bytes:
    int32 = lambda i: b"J" + struct.pack("<i", i)  # noqa: E731
    if isinstance(v, np.ndarray):  # as python 2's cPickle wrote numpy 1 arrays: numpy.core names, str data
        dtype = (b"cnumpy\ndtype\n" + _py2_str("u1") + b"K\x00K\x01\x87R"
                 + b"(K\x03" + _py2_str("|") + b"NNN" + int32(-1) + int32(-1) + b"K\x00tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + _py2_str("b")
                + b"\x87R" + b"(K\x01" + int32(v.shape[0]) + int32(v.shape[1]) + b"\x86" + dtype + b"\x89"
                + _py2_str(v.tobytes()) + b"tb")
    if isinstance(v, list):
        return b"](" + b"".join(map(_py2_value, v)) + b"e"
    return int32(v) if isinstance(v, int) else _py2_str(v)


def py2_pickle(entry: dict) -> bytes:
    """A protocol-2 pickle as the original `cifar-10-batches-py` files are: written by python 2 and numpy 1."""
    return b"\x80\x02}(" + b"".join(_py2_value(k) + _py2_value(v) for k, v in entry.items()) + b"u."


def test_original_python2_cifar_files_are_read(tmp_path, writers):
    folder = writers.cifar10(tmp_path)
    rows = writers.cifar_rows(4, 1)
    (folder / "data_batch_1").write_bytes(py2_pickle({
        "batch_label": "training batch 1 of 5", "labels": [1, 2, 3, 4], "data": rows,
        "filenames": [f"img_{i}.png" for i in range(4)]}))
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": [f"c{i}" for i in range(10)],
                                                      "num_cases_per_batch": 4, "num_vis": 3072}))
    train, _, classes = read_cifar(folder, "cifar10")
    assert classes[0] == "c0" and train.labels[:4].tolist() == [1, 2, 3, 4]
    assert train.images[0, 0, 0].tolist() == [rows[0, 0], rows[0, 1024], rows[0, 2048]]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_repickled_cifar_files_of_every_protocol_are_read(tmp_path, writers, protocol):
    folder = writers.cifar10(tmp_path)
    rows = writers.cifar_rows(4, 1)
    # labels as numpy scalars and file names as bytes, as re-pickled copies may hold them
    entry = {"data": rows, "labels": [np.int64(j) for j in range(4)], "filenames": [b"a.png"] * 4}
    (folder / "data_batch_1").write_bytes(pickle.dumps(entry, protocol=protocol))
    train, _, _ = read_cifar(folder, "cifar10")
    assert np.array_equal(train.images[:4].transpose(0, 3, 1, 2).reshape(4, -1), rows)
    assert train.labels[:4].tolist() == [0, 1, 2, 3]


def _crafted_cifar(tmp_path, writers, marker: Path, file: str = "data_batch_2") -> Path:
    folder = writers.cifar10(tmp_path / "data")
    writers.pickle(folder / file, {"data": writers.cifar_rows(4, 2), "labels": [0, 1, 2, 3],
                                   "batch_label": MarkerPayload(marker)})
    return folder


@pytest.mark.parametrize("file", ["data_batch_2", "batches.meta"])
def test_a_crafted_cifar_pickle_is_refused_without_running_it(tmp_path, writers, file):
    marker = tmp_path / "marker"
    folder = _crafted_cifar(tmp_path, writers, marker, file)
    with pytest.raises(DataError, match=rf"{file}: refused, the pickle names posix.mkdir") as err:
        open_data(f"cifar10:{folder}")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path, writers):
    folder = writers.cifar10(tmp_path)
    writers.pickle(folder / "test_batch", {"data": np.array([{"x": 1}], dtype=object), "labels": [0]})
    with pytest.raises(DataError, match=r"test_batch: refused, the pickle names an object dtype"):
        read_cifar(folder, "cifar10")


def test_probe_and_train_refuse_a_crafted_cifar_folder_in_one_line(tmp_path, writers):
    marker = tmp_path / "marker"
    folder = _crafted_cifar(tmp_path, writers, marker)
    for package, args in (
            ("probe", ["linear", "random:cifar", "--data", f"cifar10:{folder}", "--out", tmp_path / "probe",
                       "--device", "cpu", "--workers", "0", "--no-progress"]),
            ("train", ["supervised", folder, "--out", tmp_path / "train", "--arch", "cifar", "--device", "cpu",
                       "--workers", "0", "--no-progress", "--max-steps", "1"])):
        line = one_error_line(run_cli(package, *args))
        assert "data_batch_2: refused, the pickle names posix.mkdir" in line
        assert not marker.exists()
        out = tmp_path / package
        assert not out.exists() or not any(out.iterdir())


# -- encoder.pt -------------------------------------------------------------------------------------------------

def _crafted_torch_file(path: Path, marker: Path) -> Path:
    torch.save({"format": "single-image-ssl/encoder", "version": 1, "arch": "cifar", "arch_kwargs": {},
                "state_dict": {}, "config": {"note": MarkerPayload(marker)}}, path)
    return path


@pytest.mark.parametrize("command", ["linear", "finetune", "filters"])
def test_probe_refuses_a_crafted_encoder_without_running_it(tmp_path, writers, command):
    marker = tmp_path / "marker"
    encoder = _crafted_torch_file(tmp_path / "encoder.pt", marker)
    writers.cifar10(tmp_path / "data")
    data = ["--data", f"cifar10:{tmp_path / 'data'}", "--device", "cpu", "--workers", "0", "--no-progress"]
    args = {"linear": ["linear", encoder, *data, "--out", tmp_path / "out"],
            "finetune": ["finetune", encoder, *data, "--out", tmp_path / "out"],
            "filters": ["filters", encoder, "--out", tmp_path / "out" / "f.png"]}[command]
    line = one_error_line(run_cli("probe", *args))
    assert f"{encoder}: refused" in line and "posix.mkdir" in line, line
    assert "weights_only" not in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_random_bytes_as_encoder_are_one_line_without_torch_advice(tmp_path):
    encoder = tmp_path / "encoder.pt"
    for content in (os.urandom(4096), b"PK\x03\x04" + os.urandom(4096), pickle.dumps({"a": 1})[:7], b""):
        encoder.write_bytes(content)
        line = one_error_line(run_cli("probe", "filters", encoder, "--out", tmp_path / "f.png"))
        assert f"{encoder}: not a readable encoder file" in line, line
        assert "weights_only" not in line and "trusted source" not in line, line


# -- shards and archives ----------------------------------------------------------------------------------------

def test_pickles_inside_a_shard_are_never_unpickled(tmp_path):
    """webdataset can decode `.pyd`/`.pickle` members with pickle; the reader never asks it to, and refuses a shard
    holding anything but a sample's image and .json (pipeline.shard_format.ShardMembers) before any is read."""
    import hashlib
    import io
    import json
    import tarfile

    from common.errors import ShardSetError
    from pipeline.config import RenderConfig
    from pipeline.render import render_set
    from pipeline.shard_reader import open_shards

    folder, marker = tmp_path / "set", tmp_path / "marker"
    render_set(folder, RenderConfig(n_patches=4, size=32, shard_size=4), log=lambda *a: None)
    shard = folder / "patches-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    crafted = pickle.dumps(MarkerPayload(marker))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
            if member.name.endswith(".json"):
                for ext in ("pyd", "pickle"):
                    extra = tarfile.TarInfo(member.name.replace(".json", f".{ext}"))
                    extra.size = len(crafted)
                    tar.addfile(extra, io.BytesIO(crafted))
    manifest = json.loads((folder / "manifest.json").read_text())
    data = shard.read_bytes()
    manifest["shards"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for decode in ("torch", "raw", "pil"):
        with pytest.raises(ShardSetError, match=r"patches-000000\.tar:000000000\.pyd: not a sample's \.png or \.json"):
            list(open_shards(folder, decode=decode))
    assert not marker.exists()


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    """cifar10-jpg tarballs are extracted into the cache with tarfile's 'data' filter: no path outside the cache
    folder (an absolute name is taken as relative to it), no links out of it, no devices."""
    import io
    import tarfile

    from train.data.archive import extracted

    def archive(name: str, member: tarfile.TarInfo) -> Path:
        path = tmp_path / f"{name}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            if member.type == tarfile.SYMTYPE:
                tar.addfile(member)
            else:
                member.size = 2
                tar.addfile(member, io.BytesIO(b"hi"))
        return path

    link = tarfile.TarInfo("train/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    for name, member in (("escape", tarfile.TarInfo("../outside.txt")), ("link", link)):
        cache = tmp_path / "cache" / name
        with pytest.raises(DataError, match=rf"{name}.tar.gz: cannot extract"):
            extracted([archive(name, member)], cache, "cifar10-jpg")
        assert not (tmp_path / "cache" / "outside.txt").exists()
        assert not [p for p in cache.rglob("*") if p.is_file() or p.is_symlink()]
    inside = extracted([archive("absolute", tarfile.TarInfo(str(tmp_path / "absolute.txt")))],
                       tmp_path / "cache" / "absolute", "cifar10-jpg")
    assert not (tmp_path / "absolute.txt").exists()
    assert (inside / str(tmp_path / "absolute.txt").lstrip("/")).read_bytes() == b"hi"
