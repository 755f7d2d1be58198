"""Trainers stream a set by folder, by http(s) URL of the set or its manifest, or by URL pattern + manifest."""

import functools
import http.server
import threading

import pytest

from common.errors import DataError, ShardSetError
from pipeline.config import RenderConfig
from pipeline.render import render_set
from train.data.sources import ShardSource


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "set"
    render_set(out, RenderConfig(n_patches=96, size=32, shard_size=32))
    return out


@pytest.fixture
def served(small_set):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(small_set))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _epoch_indices(source: ShardSource) -> list[int]:
    return sorted(i for batch in source.loader(0, 16, drop_last=False, workers=0) for i in batch.index.tolist())


def test_http_url_of_the_set_and_of_its_manifest(served):
    for loc in (served, served + "/manifest.json"):
        source = ShardSource(loc, shuffle_buffer=8)
        assert source.num_samples == 96 and source.image_size == 32
        assert _epoch_indices(source) == list(range(96))


def test_url_pattern_needs_and_uses_a_manifest(small_set, served):
    pattern = f"pipe:cat {small_set}/patches-{{000000..000002}}.tar"
    with pytest.raises(DataError, match="a URL pattern needs --manifest"):
        ShardSource(pattern)
    source = ShardSource(pattern, manifest=served + "/manifest.json")
    assert _epoch_indices(source) == list(range(96))
    with pytest.raises(ShardSetError, match="misses 1"):
        ShardSource(f"pipe:cat {small_set}/patches-{{000000..000001}}.tar", manifest=small_set / "manifest.json")


def _train_cli(*args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "train.cli", "rotnet", *map(str, args), "--arch", "cifar",
                           "--batch-size", "16", "--epochs", "1", "--no-progress", "--head-dim", "64",
                           "--shuffle-buffer", "16", "--device", "cpu"], capture_output=True, text=True, env=env,
                          cwd=repo, timeout=600)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_training_stops_at_a_flipped_bit_in_a_patch(tmp_path_factory, workers):
    """A byte changed inside a JPEG patch keeps the shard's size and still decodes: only the hash of the stream
    sees it; training stops in one line naming the shard (from a DataLoader worker too), exit 1."""
    from ..faults import flip_byte_in_image

    folder = tmp_path_factory.mktemp("damaged") / "set"
    render_set(folder, RenderConfig(n_patches=48, size=32, shard_size=16, format="jpg"))
    flip_byte_in_image(folder / "patches-000002.tar", sample=3)
    proc = _train_cli(folder, "--out", folder.parent / "run", "--workers", workers)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines == [f"Error: {folder / 'patches-000002.tar'}: sha256 differs from the manifest's, a damaged or "
                     f"altered shard (samples 000000032..000000047); stopped. `pipeline verify` names the damaged "
                     f"sample"], lines


def test_training_refuses_patches_of_another_size_and_contradicting_manifests(small_set, tmp_path):
    import json
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(small_set, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "config": {**manifest["config"], "size": 64}}))
    proc = _train_cli(folder, "--out", tmp_path / "run", "--workers", "0")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].endswith(": a 32x32 patch, but the manifest's config.size is 64") and "patches-00000" in lines[0]
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sources": []}))
    with pytest.raises(ShardSetError, match=r"malformed manifest \('sources' is empty"):
        ShardSource(folder)


def test_a_set_folder_named_like_a_pattern_is_a_folder(small_set, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "set{a,b}::c"
    shutil.copytree(small_set, folder)
    assert _epoch_indices(ShardSource(folder, shuffle_buffer=8)) == list(range(96))
    shutil.copytree(small_set, tmp_path / "pipe:set")  # given relative, it reads as a `pipe:` command
    monkeypatch.chdir(tmp_path)
    assert _epoch_indices(ShardSource("pipe:set", shuffle_buffer=8)) == list(range(96))
