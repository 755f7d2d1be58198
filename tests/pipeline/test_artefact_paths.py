"""Artefacts (manifest.json, results.json, pictures' titles) hold paths as the user gave them, or a data kind's or
a file's name, never this machine's absolute paths (issue 32); manifests written with absolute paths still read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.config import RenderConfig
from pipeline.pack import pack_set
from pipeline.render import render_set
from pipeline.shard_reader import open_shards
from pipeline.shard_verify import describe_set, verify_set

SMALL = ["--n-patches", "8", "--size", "16", "--shard-size", "8", "--workers", "1"]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_a_relative_src_is_recorded_as_given(tmp_path, photo):
    (tmp_path / "photos").mkdir()
    shutil.copy(photo, tmp_path / "photos" / "a.png")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "render", "--src", "photos", "--out", "set", *SMALL],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [s["path"] for s in _manifest(tmp_path / "set")["sources"]] == ["photos/a.png"]


def test_the_embedded_pool_is_recorded_by_file_name_and_old_absolute_paths_still_read(tmp_path):
    out = tmp_path / "set"
    render_set(out, RenderConfig(n_patches=8, size=16, shard_size=8))
    manifest = _manifest(out)
    from pipeline.sources import DEFAULT_POOL

    assert [s["path"] for s in manifest["sources"]][0] in DEFAULT_POOL
    # a manifest written before, with the machine's absolute path: read, described, verified, resumed
    manifest["sources"][0]["path"] = "/usr/lib/python3/site-packages/skimage/data/astronaut.png"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "/usr/lib/python3/site-packages/skimage/data/astronaut.png" in describe_set(out)
    assert verify_set(out) == []
    assert len(list(open_shards(out))) == 8
    assert render_set(out, RenderConfig(n_patches=8, size=16, shard_size=8)).rendered == 0


def test_a_packed_split_records_its_folder_as_given(tmp_path, writers):
    writers.image_tree(tmp_path / "split", {"cat": 1, "dog": 1})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        pack_set("split", "packed", shard_size=8)
    finally:
        os.chdir(cwd)
    assert _manifest(tmp_path / "packed")["config"]["source"] == "split"


def test_results_name_the_cifar10_jpg_extraction_by_its_cache_folder(tmp_path, writers):
    from train.data.specs import open_data

    writers.image_tree(tmp_path / "src" / "train", {"cat": 2, "dog": 2})
    writers.image_tree(tmp_path / "src" / "test", {"cat": 1, "dog": 1})
    shared = tmp_path / "shared"
    shared.mkdir()
    writers.tarball(shared / "train.tar.gz", tmp_path / "src" / "train", "train")
    writers.tarball(shared / "test.tar.gz", tmp_path / "src" / "test", "test")
    data = open_data(f"cifar10-jpg:{shared}", cache_dir=tmp_path / "cache")
    described = data.describe()
    assert described["extracted_to"].startswith("cifar10-jpg-") and "/" not in described["extracted_to"]
    assert Path(data.notes["extracted_to"]).is_dir()  # the path itself stays in memory, for whoever reads it


def test_a_data_path_is_recorded_as_written(tmp_path, writers, monkeypatch):
    from train.data.specs import open_data

    monkeypatch.setenv("HOME", str(tmp_path))
    writers.image_tree(tmp_path / "data" / "train", {"cat": 1, "dog": 1})
    writers.image_tree(tmp_path / "data" / "val", {"cat": 1, "dog": 1})
    assert open_data("imagefolder:~/data").describe()["path"] == "~/data"


def test_an_encoder_is_named_without_this_machines_folders():
    from probe.results import encoder_label

    assert encoder_label("/home/me/runs/mono/encoder.pt") == "mono"
    assert encoder_label("/home/me/runs/mono/model-7.pt") == "model-7.pt"
    assert encoder_label("runs/mono/model-7.pt") == "runs/mono/model-7.pt"
    assert encoder_label("random:cifar") == "random:cifar"
