"""Trainers stream a set by folder, by http(s) URL of the set or its manifest, or by URL pattern + manifest."""

import functools
import http.server
import threading

import pytest

from pipeline.config import RenderConfig
from pipeline.errors import ShardSetError
from pipeline.render import render_set
from train.data import ShardSource
from train.errors import DataError


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
