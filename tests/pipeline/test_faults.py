"""A full or failing disk during `pipeline render`: one line naming the file, exit 1, and a set that resumes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.shard_verify import verify_set

from ..conftest import TINY
from ..faults import FullDisk, can_mount_tmpfs
from .conftest import folder_bytes

RENDER = ["render", "--n-patches", str(TINY["n_patches"]), "--size", str(TINY["size"]), "--shard-size",
          str(TINY["shard_size"]), "--workers", "1"]


def _last_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("target, after, skip", [
    ("patches-000002.tar", 5000, 0),  # mid-shard, after two complete shards
    ("patches-000000.tar", 0, 0),  # the very first write
    ("manifest.json", 10, 2),  # listing a shard: the manifest is rewritten after each one
])
def test_render_on_a_full_disk_is_one_line_and_resumes_to_the_same_set(tmp_path, photo, tiny_set, monkeypatch,
                                                                       target, after, skip):
    out = tmp_path / "set"
    with monkeypatch.context() as patch:
        disk = FullDisk(patch, target, after, skip)
        result = CliRunner().invoke(main, [*RENDER, "--src", str(photo), "--out", str(out)])
    assert disk.hits == 1
    assert result.exit_code == 1
    assert _last_line(result) == f"Error: {out / target}: No space left on device"
    # nothing that looks complete is half-written: no temporary left, every listed shard intact
    assert not list(out.glob("*.tmp-*"))
    problems = verify_set(out)
    assert problems[0].startswith(f"{out}: incomplete")
    assert all("not listed in manifest.json" in p for p in problems[1:]), problems  # complete, but unlisted
    resumed = CliRunner().invoke(main, [*RENDER, "--src", str(photo), "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert folder_bytes(out) == folder_bytes(tiny_set)


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_render_on_a_real_full_tmpfs_then_grown_resumes(tmp_path, photo, tiny_set):
    """The same on a real file system: a 160 KiB tmpfs fills during the render, is grown, and the render resumes."""
    mount, out = tmp_path / "mnt", tmp_path / "mnt" / "set"
    mount.mkdir()
    render = " ".join([sys.executable, "-m", "pipeline.cli", *RENDER, "--src", str(photo), "--out", str(out)])
    script = (f"mount -t tmpfs -o size=160k tmpfs {mount} && {{ {render} 2>&1 | tail -1; echo status=$?; }}; "
              f"mount -o remount,size=8m {mount} && {render} >/dev/null 2>&1 && echo resumed && "
              f"{sys.executable} -m pipeline.cli verify {out} 2>&1 | tail -1 && "
              f"cmp -s {out}/manifest.json {tiny_set}/manifest.json && echo same")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Error: {out}/") and lines[0].endswith(": No space left on device"), proc.stdout
    assert lines[1:] == ["status=0", "resumed", f"{out}: OK", "same"], proc.stdout + proc.stderr
