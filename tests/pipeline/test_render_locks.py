"""Render parts that would write the same shard do not corrupt each other (issue 32): a shard is written under its
own lock recording host and pid; a second writer of it, or a --force replacing the set, is refused in one line
naming the holder, and the holder's temporary file is left alone. Parts of disjoint shards still run in parallel
(tests/pipeline/test_scale_out.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from common.fileio import folder_lock, temporary_name
from pipeline.shard_writer import SHARD_WRITER

from ..conftest import render_tiny

RENDER = ["render", "--n-patches", "128", "--size", "32", "--shard-size", "64", "--workers", "1"]


def _render(photo, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *RENDER, "--src", str(photo), "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=120)


def test_a_second_writer_of_a_shard_is_refused_naming_the_holder(tmp_path, photo):
    out = tmp_path / "set"
    out.mkdir()
    shard = out / "patches-000000.tar"
    live = temporary_name(shard)  # the holder's shard, half written
    with folder_lock(shard, SHARD_WRITER):
        live.write_bytes(b"half a shard")
        proc = _render(photo, out)
        assert live.read_bytes() == b"half a shard"  # another writer's temporary is not removed
    holder = f"host {os.uname().nodename}, pid {os.getpid()}"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: {shard}: in use by another {SHARD_WRITER} ({holder}, lock patches-000000.tar.lock); wait for it "
        f"to end or choose another --out"]
    assert not shard.exists()
    live.unlink()
    assert _render(photo, out).returncode == 0  # the lock gone, the render completes
    assert not list(out.glob("patches-*.lock"))


def test_a_set_is_not_replaced_while_a_shard_of_it_is_written(tmp_path, photo):
    out = render_tiny(tmp_path / "set", photo, n_patches=128)
    before = (out / "manifest.json").read_bytes()
    with folder_lock(out / "patches-000001.tar", SHARD_WRITER):
        proc = _render(photo, out, "--force", "--seed", "7")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {out / 'patches-000001.tar'}: in use by another ")
    assert (out / "manifest.json").read_bytes() == before and (out / "patches-000000.tar").exists()
