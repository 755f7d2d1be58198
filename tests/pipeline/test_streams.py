"""What the shard reader streams is what the manifest promises: hashed as it passes, counted, of the set's size;
manifests that contradict themselves are refused by every reader; a set folder is a folder whatever its name."""

from __future__ import annotations

import json
import shutil

import pytest

from common.errors import ShardSetError
from pipeline.config import RenderConfig
from pipeline.render import render_set
from pipeline.shard_reader import is_url_pattern, open_shards, verify_quick
from pipeline.shard_verify import describe_set, verify_set

from ..conftest import TINY
from ..faults import flip_byte_in_image
from ..loopback import LoopbackServer
from .conftest import run_cli


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory, photo):
    """60 JPEG patches of 32 px in 3 shards: a flipped bit inside a JPEG still decodes, so only a hash sees it."""
    out = tmp_path_factory.mktemp("sets") / "jpeg"
    render_set(out, RenderConfig(n_patches=60, size=32, shard_size=20, format="jpg"), sources=[photo])
    return out


@pytest.fixture
def damaged(jpeg_set, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(jpeg_set, out)
    flip_byte_in_image(out / "patches-000001.tar", sample=7)
    verify_quick(out)  # the cheap checks pass: same size
    return out


def test_a_flipped_bit_in_a_patch_stops_the_stream_naming_the_shard(damaged):
    message = (f"{damaged / 'patches-000001.tar'}: sha256 differs from the manifest's, a damaged or altered shard "
               f"(samples 000000020..000000039)")
    with pytest.raises(ShardSetError) as err:
        list(open_shards(damaged))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    # the damaged shard's last sample is held back until its bytes are checked
    seen = []
    with pytest.raises(ShardSetError):
        for sample in open_shards(damaged):
            seen.append(sample["index"])
    assert 39 not in seen
    assert list(open_shards(damaged, verify=False))  # unverified, the damage passes unnoticed


def test_a_flipped_bit_is_caught_over_http_and_through_a_pipe(damaged):
    with LoopbackServer(damaged) as server:
        with pytest.raises(ShardSetError, match=r"/patches-000001.tar: sha256 differs from the manifest's"):
            list(open_shards(server.url))
    pattern = f"pipe:cat {damaged}/patches-{{000000..000002}}.tar"
    with pytest.raises(ShardSetError, match=r"patches-000001.tar: sha256 differs from the manifest's"):
        list(open_shards(pattern, manifest=damaged / "manifest.json"))


def test_an_intact_set_streams_whole_with_hashing(jpeg_set):
    assert sorted(s["index"] for s in open_shards(jpeg_set, shuffle_buffer=8)) == list(range(60))


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


CONTRADICTIONS = {
    "no samples": (lambda m: {**m, "n_samples": 0, "n_shards": 0, "shards": [], "config": {**m["config"],
                                                                                        "n_patches": 0}},
                   "n_samples is 0; a set holds at least one sample"),
    "no sources": (lambda m: {**m, "sources": []}, "'sources' is empty; a rendered set comes from at least one image"),
    "overlap": (lambda m: {**m, "shards": [m["shards"][0], {**m["shards"][1], "first": 40}, *m["shards"][2:]]},
                "shards[1] patches-000001.tar lists samples from 40, 64 of them; shard 1 of 256 samples in shards of "
                "64 holds 64 from 64"),
    "beyond the count": (lambda m: {**m, "shards": [*m["shards"][:3], {**m["shards"][3], "count": 65}]},
                         "shards[3] patches-000003.tar lists samples from 192, 65 of them; shard 3 of 256 samples in "
                         "shards of 64 holds 64 from 192"),
    "listed twice": (lambda m: {**m, "shards": [m["shards"][0], m["shards"][0]]},
                     "shards[1] patches-000000.tar is listed twice"),
    # shard 0 again under Arabic-Indic digits: a name no reader may take for a shard (regex \d would)
    "non-ASCII digits": (lambda m: {**m, "shards": [m["shards"][0], {**m["shards"][0], "name": "patches-"
                                                                      + "\u0660" * 6 + ".tar"}, *m["shards"][2:]]},
                         "shards[1].name 'patches-\u0660\u0660\u0660\u0660\u0660\u0660.tar' is not "
                         "patches-NNNNNN.tar"),
    "n_patches": (lambda m: {**m, "config": {**m["config"], "n_patches": 250}},
                  "config.n_patches 250 differs from n_samples 256"),
    "n_shards": (lambda m: {**m, "n_shards": 5}, "n_shards 5, but 256 samples in shards of 64 make 4"),
}


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_a_manifest_that_contradicts_itself_is_refused_by_every_reader(tiny_set, tmp_path, case):
    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    change, problem = CONTRADICTIONS[case]
    (out / "manifest.json").write_text(json.dumps(change(_manifest(tiny_set))))
    expected = f"Error: {out / 'manifest.json'}: malformed manifest ({problem})"
    for args in (["verify", str(out)], ["info", str(out)]):
        proc = run_cli(*args)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [expected], (args, proc.stderr)
    with pytest.raises(ShardSetError, match="malformed manifest"):
        open_shards(out)  # what train and probe open


def test_patches_of_another_size_than_the_manifest_says(tiny_set, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    manifest = _manifest(tiny_set)
    manifest["config"]["size"] = 48
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardSetError, match=r"patches-0000\d\d.tar:\d{9}: a 32x32 patch, but the manifest's "
                                            r"config.size is 48"):
        next(iter(open_shards(out)))  # at the first sample read
    problems = verify_set(out, decode=True)
    assert len(problems) == 4 and all("a 32x32 patch, but the manifest's config.size is 48" in p for p in problems)
    with pytest.raises(ShardSetError, match=r"patches-000000.tar:000000000: a 32x32 patch, but the manifest's "
                                            r"config.size is 48"):
        describe_set(out)
    proc = run_cli("info", str(out))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["set{1}", "a::b", "pipe:x"])
def test_an_existing_folder_is_a_folder_whatever_its_name(tiny_set, tmp_path, name, monkeypatch):
    out = tmp_path / name
    shutil.copytree(tiny_set, out)
    assert not is_url_pattern(out)
    assert len(list(open_shards(out))) == TINY["n_patches"]
    assert run_cli("verify", str(out)).returncode == 0
    # relative, the name reads as a URL list or a `pipe:` command; an existing folder is a folder all the same, as
    # README says (train took a relative folder named `pipe:...` for a command: issue 32)
    monkeypatch.chdir(tmp_path)
    assert not is_url_pattern(name)
    assert len(list(open_shards(name))) == TINY["n_patches"]
    assert is_url_pattern(str(tmp_path / "missing{1..2}")) and is_url_pattern("pipe:cat x")


def test_json_nested_without_end_is_one_line_not_a_recursion_error(tiny_set, tmp_path):
    # a crafted manifest or sample provenance 100,000 brackets deep (issue 32): the parser's RecursionError
    # becomes the one-line error of any malformed JSON
    from pipeline.shard_reader import decode_sample

    deep = "[" * 100_000 + "]" * 100_000
    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    (out / "manifest.json").write_text(deep)
    for args in (["verify", str(out)], ["info", str(out)]):
        proc = run_cli(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-500:]
        assert proc.stderr.strip().splitlines() == [
            f"Error: {out / 'manifest.json'}: unreadable manifest (JSON nested too deeply to read)"]
    sample = {"__key__": "000000000", "__url__": "patches-000000.tar", "png": b"", "json": deep.encode()}
    with pytest.raises(ShardSetError, match=r"patches-000000.tar:000000000: its .json is not a JSON object"):
        decode_sample(sample)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "folder"])
def test_a_member_that_is_not_a_file_is_a_problem_for_verify_as_for_the_reader(tiny_set, tmp_path, kind):
    """The reader skips tar members that are not regular files, so the sample lacks them; verify said OK for a hard
    link and failed with a traceback on a symlink or a folder (issue 32). Both now refuse, in one line each, a shard
    whose manifest entry was updated to match."""
    import hashlib
    import io
    import tarfile

    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    shard = out / "patches-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members[:-1]:
            tar.addfile(member, io.BytesIO(data))
        odd = tarfile.TarInfo(members[-1][0].name)  # the last sample's .json
        odd.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "folder": tarfile.DIRTYPE}[kind]
        odd.linkname = "" if kind == "folder" else members[1][0].name
        tar.addfile(odd)
    manifest = _manifest(out)
    data = shard.read_bytes()
    manifest["shards"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_set(out, decode=True)
    what = {"symlink": "a symbolic link to '000000000.json'", "hardlink": "a hard link to '000000000.json'",
            "folder": "a folder"}[kind]
    assert problems[0] == f"{shard}:000000063.json: {what}; a shard holds regular files only", problems
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    with pytest.raises(ShardSetError, match="patches-000000.tar"):
        list(open_shards(out))


def test_a_manifest_claiming_more_samples_than_its_shards_can_hold_is_refused_before_any_sizing(tiny_set, tmp_path):
    """10^12 samples claimed in one small (intact, correctly hashed) shard: verify built every expected key in
    memory and DeepCluster sized its buffers by the count (issue 32). The count is checked against the bytes."""
    from click.testing import CliRunner

    from train.cli import main as train_main

    out = tmp_path / "set"
    shutil.copytree(tiny_set, out)
    for extra in ("patches-000001.tar", "patches-000002.tar", "patches-000003.tar"):
        (out / extra).unlink()
    m, huge = _manifest(tiny_set), 10**12
    shard = {**m["shards"][0], "count": huge}
    m.update(n_samples=huge, n_shards=1, shards=[shard], config={**m["config"], "n_patches": huge, "shard_size": huge})
    (out / "manifest.json").write_text(json.dumps(m))
    problem = (f"shards[0] patches-000000.tar lists {huge:,} samples in {shard['bytes']:,} bytes; a sample takes at "
               "least 2,048 bytes of tar")
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"Error: {out / 'manifest.json'}: malformed manifest ({problem})"]
    r = CliRunner().invoke(train_main, ["deepcluster", str(out), "--out", str(tmp_path / "run"), "--arch", "cifar",
                                        "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 1 and problem in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_a_shard_image_in_another_format_is_refused_before_it_is_decoded():
    """OpenCV decodes formats whose size neither the header parser nor Pillow reads (a Radiance HDR named .png:
    its size read as 0 x 0, and 196 Mpx were decoded before the bomb check; issue 32): shards hold JPEG and PNG only,
    and anything else, or a header without a size, is refused before decoding."""
    import cv2
    import numpy as np

    from pipeline.shard_reader import decode_bgr

    ok, hdr = cv2.imencode(".hdr", np.ones((8, 8, 3), np.float32))
    assert ok and cv2.imdecode(hdr, cv2.IMREAD_COLOR) is not None  # OpenCV would decode it
    with pytest.raises(ShardSetError, match=r"^x\.png: not a JPEG or PNG image \(what a shard holds\), refused"):
        decode_bgr(hdr.tobytes(), "x.png")
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert decode_bgr(png.tobytes(), "y.png").shape == (8, 8, 3)
    headless = png.tobytes()[:8] + b"\0" * 32  # a PNG signature, then no header chunk
    with pytest.raises(ShardSetError, match=r"^z\.png: no image size in its header, refused before decoding"):
        decode_bgr(headless, "z.png")
