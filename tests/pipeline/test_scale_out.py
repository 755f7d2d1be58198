"""Many render jobs into one set, and streaming a set from storage (loopback HTTP, pipe: commands)."""

import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from common.errors import ShardSetError
from pipeline.config import RenderConfig
from pipeline.render import render_set
from pipeline.shard_reader import open_shards

from ..conftest import TINY
from ..loopback import LoopbackServer
from .conftest import folder_bytes, run_cli


def test_concurrent_parts_and_a_killed_part_make_the_same_set(tmp_path, photo):
    args = ["--src", str(photo), "--n-patches", "2400", "--size", "64", "--shard-size", "200", "--workers", "1"]
    out = tmp_path / "shared"

    def start(i):
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "render", *args, "--out", str(out),
                                 "--part", f"{i}/3"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    procs = {i: start(i) for i in range(3)}
    deadline = time.time() + 60
    while time.time() < deadline:  # kill part 1 while it is writing one of its shards (1, 4, 7 or 10)
        if any(out.glob("patches-00000[147].tar.tmp-*")):
            break
        time.sleep(0.002)
    os.kill(procs[1].pid, signal.SIGKILL)
    procs[1].wait()
    for i in (0, 2):
        assert procs[i].wait(timeout=120) == 0, procs[i].stderr.read()
    done_before = {p.name for p in out.glob("patches-*.tar")}
    assert {f"patches-{s:06d}.tar" for s in (0, 2, 3, 5, 6, 8, 9, 11)} <= done_before
    assert not {f"patches-{s:06d}.tar" for s in (1, 4, 7, 10)} <= done_before, "part 1 was not interrupted"
    rerun = run_cli("render", *args, "--out", str(out), "--part", "1/3", check=True)
    assert "complete" in rerun.stdout
    run_cli("render", *args, "--out", str(tmp_path / "single"), check=True)
    assert folder_bytes(out) == folder_bytes(tmp_path / "single")


def test_stream_a_set_over_http(tiny_set):
    with LoopbackServer(tiny_set) as server:
        for loc in (server.url + "/", server.url + "/manifest.json"):
            ds = open_shards(loc)
            assert ds.n_samples == TINY["n_patches"]
            assert sorted(s["index"] for s in ds) == list(range(TINY["n_patches"]))


def test_a_dropped_connection_is_an_error_not_a_short_epoch(tiny_set, monkeypatch):
    monkeypatch.setenv("SINGLE_IMAGE_SSL_NET_BACKOFF", "0")  # retried at once: the test needs no waits
    with LoopbackServer(tiny_set, cut={"patches-000002.tar": 20_000}) as server:
        with pytest.raises(ShardSetError, match=r"patches-000002.tar: connection dropped after 20,000 of 256,000 "
                                                r"bytes \(after 3 attempts\)"):
            list(open_shards(server.url))


def test_a_cleanly_ended_but_short_shard_is_caught_by_the_counts(tiny_set):
    data = (tiny_set / "patches-000001.tar").read_bytes()
    with tarfile.open(tiny_set / "patches-000001.tar") as tar:
        cut_at = [m.offset for m in tar.getmembers()][40]  # 20 samples, then a valid end-of-archive
    short = data[:cut_at] + b"\0" * 1024
    with LoopbackServer(tiny_set, replace={"patches-000001.tar": short}) as server:
        # a remote shard is spooled and its length checked before any sample of it is read
        with pytest.raises(ShardSetError, match=r"patches-000001.tar: shorter than its manifest entry \(79,360 of "):
            list(open_shards(server.url))
        # the counts catch it too, when the stream is not hashed (and for shards a manifest gives no hash of)
        with pytest.raises(ShardSetError, match="patches-000001.tar: 20 samples, the manifest lists 64"):
            list(open_shards(server.url, verify=False))


def test_pipe_url_pattern_with_a_manifest(tiny_set):
    pattern = f"pipe:cat {tiny_set}/patches-{{000000..000003}}.tar"
    ds = open_shards(pattern, manifest=tiny_set / "manifest.json")
    assert ds.n_samples == TINY["n_patches"]
    assert sorted(s["index"] for s in ds) == list(range(TINY["n_patches"]))
    assert len(list(open_shards(pattern))) == TINY["n_patches"]  # without a manifest: no counts, still streams


def test_render_parts_cannot_mix_configurations(tmp_path, photo):
    out = tmp_path / "mix"
    render_set(out, RenderConfig(**TINY), sources=[photo], part=(0, 2))
    with pytest.raises(ShardSetError, match="holds a different set"):
        render_set(out, RenderConfig(**{**TINY, "seed": 1}), sources=[photo], part=(1, 2))


def test_a_pattern_that_misses_a_shard_of_its_manifest_is_refused(tiny_set):
    pattern = f"pipe:cat {tiny_set}/patches-{{000000..000002}}.tar"  # the set has four shards
    with pytest.raises(ShardSetError, match=r"does not match the manifest's 4 shards: misses 1 \(patches-000003"):
        open_shards(pattern, manifest=tiny_set / "manifest.json")
