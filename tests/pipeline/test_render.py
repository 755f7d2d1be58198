"""Rendered sets: byte-identical whatever the workers, parts or interruptions; verified; read exactly once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.errors import ShardSetError
from pipeline.config import RenderConfig
from pipeline.render import render_set
from pipeline.shard_reader import open_shards
from pipeline.shard_verify import verify_set

from ..conftest import TINY
from .conftest import folder_bytes, run_cli


def test_shards_are_plain_tars_with_provenance(tiny_set, tmp_path, photo):
    names = subprocess.run(["tar", "-tf", str(tiny_set / "patches-000000.tar")], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names[:4] == ["000000000.png", "000000000.json", "000000001.png", "000000001.json"]
    assert len(names) == 2 * TINY["shard_size"]
    assert sorted(p.name for p in tiny_set.glob("*.tar")) == [f"patches-{i:06d}.tar" for i in range(4)]
    # a count that is not a multiple of the shard size ends in a shorter shard
    render_set(tmp_path / "short", RenderConfig(**{**TINY, "n_patches": 100}), sources=[photo])
    shards = json.loads((tmp_path / "short" / "manifest.json").read_text())["shards"]
    assert [(s["name"], s["first"], s["count"]) for s in shards] == [
        ("patches-000000.tar", 0, 64), ("patches-000001.tar", 64, 36)]


def test_same_set_for_any_worker_count(tmp_path, photo, tiny_set):
    render_set(tmp_path / "w2", RenderConfig(**TINY), sources=[photo], workers=2)
    assert folder_bytes(tmp_path / "w2") == folder_bytes(tiny_set)


def test_same_set_for_any_part_split(tmp_path, photo, tiny_set):
    out = tmp_path / "parts"
    first = render_set(out, RenderConfig(**TINY), sources=[photo], part=(1, 3))
    assert not first.complete and first.rendered == 1  # shard 1 (of 0-3)
    render_set(out, RenderConfig(**TINY), sources=[photo], part=(0, 3), workers=2)
    last = render_set(out, RenderConfig(**TINY), sources=[photo], part=(2, 3))
    assert last.complete
    assert folder_bytes(out) == folder_bytes(tiny_set)


def test_finished_render_is_a_noop(tiny_set, photo):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_set.iterdir()}
    messages = []
    summary = render_set(tiny_set, RenderConfig(**TINY), sources=[photo], log=messages.append)
    assert summary.rendered == 0 and summary.complete and "nothing to do" in messages[0]
    assert {p.name: p.stat().st_mtime_ns for p in tiny_set.iterdir()} == before


def test_different_set_is_refused_unless_forced(tmp_path, photo):
    out = tmp_path / "s"
    render_set(out, RenderConfig(**TINY), sources=[photo])
    with pytest.raises(ShardSetError, match=r"holds a different set \(size: 32 here, 48 asked\).*--force"):
        render_set(out, RenderConfig(**{**TINY, "size": 48}), sources=[photo])
    proc = run_cli("render", "--src", str(photo), "--out", str(out), "--n-patches", str(TINY["n_patches"]),
                   "--size", "32", "--shard-size", str(TINY["shard_size"]), "--seed", "3")
    assert proc.returncode == 1 and "seed: 0 here, 3 asked" in proc.stderr
    replaced = render_set(out, RenderConfig(**{**TINY, "size": 48}), sources=[photo], force=True)
    assert replaced.complete and replaced.manifest["config"]["size"] == 48


def wait_until_stopped(pid: int) -> None:
    """SIGSTOP takes effect asynchronously; state T in /proc means any syscall in flight (a rename) has finished."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(2000):
        if stat.read_text().rsplit(")", 1)[1].split()[0] in "Tt":
            return
        time.sleep(0.001)


def test_resume_after_sigkill_mid_shard(tmp_path, photo):
    args = ["--src", str(photo), "--n-patches", "1200", "--size", "64", "--shard-size", "200", "--workers", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "render", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Freeze the render before looking, so the half-written shard cannot be renamed between the look and the kill
    # (a plain poll-then-kill raced on a loaded machine).
    caught, deadline = False, time.time() + 120
    while not caught and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        wait_until_stopped(proc.pid)
        caught = bool(list(out.glob("patches-*.tar")) and list(out.glob("*.tmp-*")))
        if not caught:
            os.kill(proc.pid, signal.SIGCONT)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob("*.tmp-*")), "the render was not caught mid-shard"
    assert len(list(out.glob("patches-*.tar"))) < 6
    run_cli("render", *args, "--out", str(out), check=True)
    run_cli("render", *args, "--out", str(tmp_path / "whole"), check=True)
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")
    assert not list(out.glob("*.tmp-*"))


def test_verify_catches_flipped_byte_and_truncation(tmp_path, photo):
    out = tmp_path / "v"
    render_set(out, RenderConfig(**TINY), sources=[photo])
    assert verify_set(out) == []
    shard = out / "patches-000002.tar"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0x01
    shard.write_bytes(bytes(data))
    (out / "patches-000003.tar").write_bytes((out / "patches-000003.tar").read_bytes()[:7000])
    problems = verify_set(out)
    assert any("patches-000002.tar: sha256 differs" in p for p in problems)
    assert any("patches-000003.tar: 7000 bytes" in p and "truncated" in p for p in problems)
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and "2 problem(s)" in proc.stderr
    # a resumed render re-renders the truncated shard (size check), and verify then finds only the altered one
    render_set(out, RenderConfig(**TINY), sources=[photo])
    assert [p for p in verify_set(out) if "patches-000003" in p] == []


def test_reader_yields_every_sample_once_per_epoch(tiny_set):
    ds = open_shards(tiny_set, shuffle_buffer=40, seed=1)
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        seen = [s["index"] for s in loader]
        assert sorted(seen) == list(range(TINY["n_patches"]))
        orders.append(seen)
    assert orders[0] != orders[1]
    ds.set_epoch(0)
    again = [s["index"] for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)]
    assert again == orders[0]  # an epoch's order is reproducible (exact resume)


def test_reader_samples_carry_image_key_and_provenance(tiny_set):
    s = next(iter(open_shards(tiny_set)))
    assert s["key"] == "000000000" and s["index"] == 0
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.uint8
    assert set(s["meta"]) >= {"source", "box", "angle", "flip", "jitter"}


def test_reader_refuses_a_truncated_or_incomplete_set(tmp_path, photo):
    out = tmp_path / "r"
    render_set(out, RenderConfig(**TINY), sources=[photo], part=(0, 2))
    with pytest.raises(ShardSetError, match="incomplete set"):
        open_shards(out)
    render_set(out, RenderConfig(**TINY), sources=[photo], part=(1, 2))
    shard = out / "patches-000001.tar"
    shard.write_bytes(shard.read_bytes()[:9000])
    with pytest.raises(ShardSetError, match="patches-000001.tar: 9000 bytes"):
        open_shards(out)
    # unchecked, the torn shard still raises rather than shortening the epoch
    with pytest.raises(ShardSetError, match="patches-000001.tar: unreadable shard, truncated"):
        list(open_shards(out, check=False))


def test_cli_help_info_and_preview(tiny_set, tmp_path):
    for cmd in ([], ["render"], ["verify"], ["info"], ["preview"]):
        proc = run_cli(*cmd, "--help", check=True)
        assert "Example" in proc.stdout
    info = run_cli("info", str(tiny_set), check=True).stdout
    assert "256 of 256 rendered" in info and "coffee.png" in info
    run_cli("preview", str(tiny_set), "--out", str(tmp_path / "p.png"), "--rows", "2", "--cols", "3", check=True)
    from PIL import Image

    assert Image.open(tmp_path / "p.png").size == (3 * 34 + 2, 2 * 34 + 2)


def test_cli_says_which_shards_it_wrote(tmp_path, photo):
    out = tmp_path / "parts"
    render = ("render", "--src", str(photo), "--out", str(out), "--n-patches", "20", "--size", "16", "--shard-size",
              "8", "--workers", "1")
    first = run_cli(*render, "--part", "1/2", check=True).stdout
    assert first == f"{out}: rendered 1 shards (part 1/2 done, other parts pending)\n"
    assert run_cli(*render, check=True).stdout == f"{out}: rendered 2 shards (complete)\n"
    assert run_cli(*render, check=True).stdout == ""  # nothing left to write: said on stderr only


def test_cli_sets_rotation_range_and_smallest_crop(tmp_path, photo):
    out = tmp_path / "narrow"
    run_cli("render", "--src", str(photo), "--out", str(out), "--n-patches", "60", "--size", "32", "--workers", "1",
            "--no-jitter", "--max-angle", "5", "--min-area", "0.25", check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["config"]["max_angle"], manifest["config"]["min_area"]) == (5.0, 0.25)
    width, height = manifest["sources"][0]["width"], manifest["sources"][0]["height"]
    meta = [s["meta"] for s in open_shards(out)]
    angles = [m["angle"] for m in meta]
    assert max(abs(a) for a in angles) <= 5 and len(set(angles)) == 60
    assert min(m["box"][2] * m["box"][3] for m in meta) >= 0.25 * width * height * 0.99
    for bad, message in ((["--max-angle", "120"], "'--max-angle': 120.0 is not in the range 0<=x<=90."),
                         (["--recipe", "released", "--max-angle", "10"], "max_angle set the paper recipe")):
        proc = run_cli("render", "--src", str(photo), "--out", str(tmp_path / "bad"), *bad)
        assert proc.returncode == 2 and message in proc.stderr
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("option", [["--workers", "-3"], ["--workers", "0"], ["--n-src", "0"], ["--seed", "-1"],
                                    ["--n-patches", "0"], ["--size", "4"], ["--shard-size", "0"],
                                    ["--min-src-side", "-1"]])
def test_render_refuses_out_of_range_numbers_as_usage_errors(tmp_path, photo, option):
    out = tmp_path / "set"
    proc = run_cli("render", "--src", str(photo), "--n-patches", "10", "--size", "32", "--out", str(out), *option)
    assert proc.returncode == 2 and f"Invalid value for '{option[0]}'" in proc.stderr
    assert not out.exists()


def test_a_manifest_lacking_fields_is_one_line_for_every_reader(tmp_path, photo, tiny_set):
    from pipeline.shard_reader import verify_quick

    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    manifest = out / "manifest.json"
    good = json.loads(manifest.read_text())
    broken = {"no shards": ({k: v for k, v in good.items() if k != "shards"}, "missing 'shards'"),
              "no config": ({"format": good["format"], "version": good["version"]}, "missing 'config'"),
              "bad count": ({**good, "shards": [{**good["shards"][0], "count": "50"}]},
                            "shards[0].'count' is not a non-negative integer"),
              "escaping name": ({**good, "shards": [{**good["shards"][0], "name": "../x.tar"}]},
                                "shards[0].name '../x.tar' is not patches-NNNNNN.tar")}
    commands = (["verify", str(out)], ["info", str(out)], ["preview", str(out), "--out", str(tmp_path / "p.png")],
                ["render", "--src", str(photo), "--n-patches", str(TINY["n_patches"]), "--size", "32", "--out",
                 str(out)])
    for n, (m, problem) in enumerate(broken.values()):
        manifest.write_text(json.dumps(m))
        expected = f"Error: {manifest}: malformed manifest ({problem})"
        for args in commands if n == 0 else commands[:1]:  # one validation serves every reader
            proc = run_cli(*args)
            assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == expected, (args, proc.stderr)
        with pytest.raises(ShardSetError, match="malformed manifest"):
            verify_quick(out)  # what train and probe call before a long job


def test_preview_of_a_damaged_set_is_one_line_naming_the_shard(tmp_path, tiny_set):
    from pipeline.preview import contact_sheet

    damage = {"cut": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
              "removed": lambda p: p.unlink(),
              "overwritten": lambda p: p.write_bytes(os.urandom(p.stat().st_size))}
    for name, damage_shard in damage.items():
        out = tmp_path / name
        shutil.copytree(tiny_set, out)
        damage_shard(out / "patches-000000.tar")
        sheet = tmp_path / f"{name}.png"
        with pytest.raises(ShardSetError) as e:
            contact_sheet(out, sheet, rows=8, cols=8)
        assert str(e.value).startswith(f"{out / 'patches-000000.tar'}: ") and "\n" not in str(e.value), name
        assert not sheet.exists()
    proc = run_cli("preview", str(tmp_path / "cut"), "--out", str(tmp_path / "p.png"))
    assert proc.returncode == 1 and proc.stderr.startswith(f"Error: {tmp_path / 'cut' / 'patches-000000.tar'}: ")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option", [["--out", "x.txt"], ["--out", "noext"], ["--rows", "-1"], ["--rows", "0"],
                                    ["--cols", "0"], ["--seed", "-1"]])
def test_preview_refuses_bad_options_as_usage_errors(tiny_set, tmp_path, option):
    proc = run_cli("preview", str(tiny_set), "--out", str(tmp_path / "p.png"), *option)
    assert proc.returncode == 2 and f"Invalid value for '{option[0]}'" in proc.stderr
    assert list(tmp_path.iterdir()) == []
