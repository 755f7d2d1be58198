"""`pipeline pack`: a labelled ImageFolder split as shards, byte-identical whatever the workers; clear refusals."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import SourceImageError
from pipeline.pack import pack_set
from pipeline.shard_reader import open_shards
from pipeline.shard_verify import verify_set

from .conftest import run_cli


def write_split(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """ROOT/<class>/ with tiny images, alternating PNG and JPEG (one .JPEG, as in ImageNet's file names)."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
            suffix = ".png" if i % 2 else (".JPEG" if i == 0 else ".jpg")
            image.save(root / name / f"img{i:02d}{suffix}", "PNG" if suffix == ".png" else "JPEG")
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("split") / "train", {"cat": 9, "dog": 8, "emu": 7})


def _set_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name == "manifest.json" or p.suffix == ".tar"}


def test_pack_writes_plain_tars_with_labels_in_class_and_path_order(split, tmp_path):
    out = tmp_path / "set"
    summary = pack_set(split, out, shard_size=10, log=lambda m: None)
    assert summary.complete and summary.rendered == 3
    names = subprocess.run(["tar", "-tf", out / "patches-000000.tar"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names[:4] == ["000000000.jpg", "000000000.json", "000000001.png", "000000001.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "labelled" and manifest["classes"] == ["cat", "dog", "emu"]
    assert manifest["n_samples"] == 24 and [s["count"] for s in manifest["shards"]] == [10, 10, 4]
    assert manifest["config"]["format"] == "mixed" and manifest["config"]["shard_size"] == 10
    metas = [s["meta"] for s in open_shards(out, decode="raw")]
    assert [m["index"] for m in metas] == list(range(24))
    assert metas[0] == {"index": 0, "label": 0, "class": "cat", "path": "cat/img00.JPEG"}
    assert [m["label"] for m in metas] == [0] * 9 + [1] * 8 + [2] * 7
    with tarfile.open(out / "patches-000000.tar") as tar:  # copied unchanged, not re-encoded
        assert tar.extractfile("000000001.png").read() == (split / "cat" / "img01.png").read_bytes()
    assert verify_set(out) == []
    assert pack_set(split, out, shard_size=10, log=lambda m: None).rendered == 0  # a no-op when complete


def test_workers_parts_and_resume_make_the_same_bytes(split, tmp_path):
    one, two, parts = tmp_path / "one", tmp_path / "two", tmp_path / "parts"
    pack_set(split, one, shard_size=5, workers=1, log=lambda m: None)
    pack_set(split, two, shard_size=5, workers=2, log=lambda m: None)
    pack_set(split, parts, shard_size=5, part=(1, 2), log=lambda m: None)
    (parts / "patches-000001.tar").unlink()  # a damaged part is delisted and packed again
    pack_set(split, parts, shard_size=5, part=(0, 2), log=lambda m: None)
    pack_set(split, parts, shard_size=5, part=(1, 2), log=lambda m: None)
    assert _set_bytes(one) == _set_bytes(two) == _set_bytes(parts)


def _bomb_png(path: Path) -> None:
    """A PNG header claiming 20,000 x 20,000 pixels (beyond the bomb limit), without the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "corrupt or truncated image"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("not a picture"), "not an image file"),
    (_bomb_png, "image too large, a possible decompression bomb")])
def test_a_bad_image_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, damage, message):
    src = write_split(tmp_path / "src", {"a": 3, "b": 4})
    bad = src / "b" / "img02.jpg"
    good = bad.read_bytes()
    damage(bad)
    out = tmp_path / "out" / "set"
    args = ["pack", str(src), "--out", str(out), "--shard-size", "2", "--workers", "2"]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {bad}: {message}")
    assert not out.exists()  # checked before anything is written: no half-made set to refuse the fixed re-run
    bad.unlink()  # fixed by removing the file: a different listing, which must not need --force
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, capture_output=True)
    assert verify_set(out) == []
    bad.write_bytes(good)  # fixed by restoring it: the same command packs the new listing (with --force)
    assert pack_set(src, out, shard_size=2, force=True, log=lambda m: None).complete


def test_every_bad_image_is_reported_in_one_run(tmp_path):
    src = write_split(tmp_path / "src", {"a": 3, "b": 4})
    for bad in (src / "a" / "img01.png", src / "b" / "img03.png"):
        bad.write_bytes(b"")
    lines = []
    with pytest.raises(SourceImageError, match=r"a/img01\.png: empty file \(and 1 more unusable images"):
        pack_set(src, tmp_path / "set", shard_size=2, workers=2, log=lines.append)
    assert lines == [f"also unusable: {src / 'b' / 'img03.png'}: empty file"]
    assert not (tmp_path / "set").exists()


def test_pack_refuses_a_bad_worker_count_as_a_usage_error(split, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "pack", str(split), "--out", str(tmp_path / "s"),
                           "--workers", "-3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Invalid value for '--workers'" in proc.stderr


def test_refusals(split, tmp_path, tiny_set):
    from common.errors import ShardSetError

    src = write_split(tmp_path / "src", {"a": 2})
    (src / "a" / "notes.gif").write_bytes(b"GIF89a")
    with pytest.raises(SourceImageError, match=r"notes\.gif: not a JPEG or PNG"):
        pack_set(src, tmp_path / "x", log=lambda m: None)
    out = tmp_path / "set"
    pack_set(split, out, shard_size=10, log=lambda m: None)
    with pytest.raises(ShardSetError, match="holds a different set"):
        pack_set(split, out, shard_size=8, log=lambda m: None)
    with pytest.raises(ShardSetError, match="a rendered set, not a labelled one"):
        pack_set(split, tiny_set, log=lambda m: None)


def test_preview_of_a_packed_set_fits_each_image_to_a_tile(split, tmp_path):
    from pipeline.preview import LABELLED_TILE, contact_sheet

    out = tmp_path / "set"
    pack_set(split, out, shard_size=10, log=lambda m: None)
    sheet = contact_sheet(out, tmp_path / "sheet.png", rows=2, cols=3)
    assert Image.open(sheet).size == (3 * (LABELLED_TILE + 2) + 2, 2 * (LABELLED_TILE + 2) + 2)
    # the 16 px images are scaled up into their tiles: no tile is left blank
    pixels = np.asarray(Image.open(sheet))
    for r in range(2):
        for c in range(3):
            y, x = 2 + r * (LABELLED_TILE + 2), 2 + c * (LABELLED_TILE + 2)
            assert pixels[y:y + LABELLED_TILE, x:x + LABELLED_TILE].std() > 10


def test_a_packed_manifest_with_inconsistent_classes_is_one_line(split, tmp_path):
    out = tmp_path / "set"
    pack_set(split, out, shard_size=10, log=lambda m: None)
    manifest = out / "manifest.json"
    good = json.loads(manifest.read_text())
    config = good["config"]
    for broken, problem in (({k: v for k, v in config.items() if k != "classes"}, "missing config.'classes'"),
                            ({**config, "classes": ["cat", "dog"]}, "config.classes differs from classes")):
        manifest.write_text(json.dumps({**good, "config": broken}))
        for command in ("verify", "info"):
            proc = run_cli(command, str(out))
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.strip().splitlines()[-1] == f"Error: {manifest}: malformed manifest ({problem})"


def test_a_shard_holding_a_decompression_bomb_is_refused_before_decoding(split, tmp_path):
    """A set made elsewhere can hold any image, self-consistently listed: the shard decoder checks the header's
    size against the one limit before OpenCV allocates the pixels (its own limit is six times ours)."""
    from common.errors import ShardSetError
    from common.hashing import sha256_files

    out = tmp_path / "set"
    pack_set(split, out, shard_size=10, log=lambda m: None)
    shard, bomb = out / "patches-000000.tar", tmp_path / "bomb.png"
    _bomb_png(bomb)
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            data = bomb.read_bytes() if member.name == "000000001.png" else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0].update(sha256=sha256_files(shard), bytes=shard.stat().st_size)
    (out / "manifest.json").write_text(json.dumps(manifest))
    problem = f"{shard}:000000001: more than 178,956,970 pixels (decompression bomb?), refused"
    assert verify_set(out) == [problem]
    with pytest.raises(ShardSetError) as error:  # the reader's words are verify's (issue 32)
        list(open_shards(out))
    assert str(error.value) == problem


@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("JPEG", {"quality": 30}),
                                          ("PNG", {}), ("WEBP", {}), ("BMP", {})])
def test_the_shard_decoders_header_size_is_pillows(fmt, options):
    from pipeline.shard_reader import header_size

    for width, height in ((32, 32), (17, 301), (640, 7)):
        image = Image.fromarray(np.random.default_rng(width).integers(0, 255, (height, width, 3), np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        assert header_size(buffer.getvalue()) == (width, height), (fmt, options)
    assert header_size(b"not an image") == (0, 0)
