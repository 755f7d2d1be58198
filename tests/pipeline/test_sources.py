"""Every kind of source image a user may hand us: read correctly, or refused with one line naming the file."""

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import SourceImageError
from pipeline.sources import discover_sources, load_source, select_sources

from .conftest import run_cli, save

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_greyscale_becomes_grey_rgb(tmp_path):
    g = RGB[..., 0]
    src = load_source(save(tmp_path / "g.png", g))
    assert src.rgb.shape == (40, 60, 3) and (src.rgb == g[..., None]).all() and src.mode == "L"


def test_sixteen_bit_uses_the_full_range(tmp_path):
    a = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 27).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)  # mode I;16
    src = load_source(path)
    expected = np.rint(a / 65535 * 255).astype(np.uint8)
    assert np.abs(src.rgb[..., 0].astype(int) - expected).max() <= 1
    assert src.rgb.max() > 200  # not clipped at 255 out of 65535, as Pillow's convert would


def test_rgba_palette_and_cmyk(tmp_path):
    rgba = np.dstack([RGB, np.full((40, 60), 255, np.uint8)])
    assert (load_source(save(tmp_path / "a.png", rgba)).rgb == RGB).all()
    pal = Image.fromarray(RGB).quantize(16)
    pal.save(tmp_path / "p.png")
    assert load_source(tmp_path / "p.png").rgb.shape == (40, 60, 3)
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    src = load_source(tmp_path / "c.jpg")
    assert src.mode == "CMYK" and np.abs(src.rgb.astype(int) - RGB).mean() < 12


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(RGB)  # 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    src = load_source(tmp_path / "r.jpg")
    assert (src.width, src.height) == (40, 60)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"this is not an image at all", "not an image"),
])
def test_not_images(tmp_path, content, message):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(SourceImageError, match=message) as e:
        load_source(tmp_path / "x.jpg")
    assert "x.jpg" in e.value.message and "\n" not in e.value.message


def test_truncated_image(tmp_path):
    save(tmp_path / "t.jpg", RNG.integers(0, 256, (300, 300, 3), dtype=np.uint8), quality=95)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceImageError, match="t.jpg: corrupt or truncated"):
        load_source(tmp_path / "t.jpg")


def test_decompression_bomb(tmp_path):
    # a 1-bit PNG of 20000 x 20000 = 400 Mpx compresses to a few kB
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(SourceImageError, match="bomb.png: image too large"):
        load_source(tmp_path / "bomb.png")


def test_too_small_for_the_patch(tmp_path):
    with pytest.raises(SourceImageError, match=r"small.png: 60x40 is smaller than the minimum source side of 64"):
        load_source(save(tmp_path / "small.png", RGB), min_side=64)


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SourceImageError, match="folder holds no images"):
        discover_sources([tmp_path / "empty"])
    with pytest.raises(SourceImageError, match="no such file or folder"):
        discover_sources([tmp_path / "nope"])


def test_selection_is_seeded_and_needs_enough_images(tmp_path):
    for i in range(6):
        save(tmp_path / f"{i}.png", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    cands = discover_sources([tmp_path])
    pick = [s.path for s in select_sources(cands, 3, seed=0, min_side=8)]
    assert pick == [s.path for s in select_sources(cands, 3, seed=0, min_side=8)]
    assert pick == sorted(pick) and len(set(pick)) == 3
    assert any(pick != [s.path for s in select_sources(cands, 3, seed=k, min_side=8)] for k in range(1, 5))
    with pytest.raises(SourceImageError, match="--n-src 7 asks for more images than the given sources hold"):
        select_sources(cands, 7, seed=0, min_side=8)


def test_bad_pick_is_an_error_unless_skipped(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (tmp_path / "1.png").write_bytes(b"garbage")
    cands = discover_sources([tmp_path])
    with pytest.raises(SourceImageError, match="1.png: not an image.*--skip-bad"):
        select_sources(cands, 3, seed=0, min_side=8)
    warnings = []
    with pytest.raises(SourceImageError, match="only 2 of 3 sources are usable"):
        select_sources(cands, 3, seed=0, min_side=8, skip_bad=True, warn=warnings.append)
    got = select_sources(cands, 2, seed=0, min_side=8, skip_bad=True, warn=warnings.append)
    assert len(got) == 2 and all("1.png" not in s.path for s in got)


def test_cli_reports_bad_source_in_one_line(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = run_cli("render", "--src", str(tmp_path / "broken.jpg"), "--out", str(tmp_path / "out"),
                   "--n-patches", "10", "--size", "32")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broken.jpg" in lines[0] and lines[0].startswith("Error:")
    assert not list((tmp_path / "out").glob("*.tar")) and not (tmp_path / "out" / "manifest.json").exists()
