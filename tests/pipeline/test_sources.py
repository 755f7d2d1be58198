"""Every kind of source image a user may hand us: read correctly, or refused with one line naming the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import SourceImageError
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


def test_one_bomb_limit_in_the_check_the_message_and_the_docs(tmp_path, monkeypatch):
    import pipeline.sources as sources
    from pipeline.config import RenderConfig
    from pipeline.render import render_set
    from pipeline.sources import open_rgb

    docs = Path(__file__).resolve().parents[2] / "docs"
    for page in ("rendering.md", "errors.md"):  # the number users read is the one in force
        assert f"{sources.MAX_SOURCE_PIXELS:,} pixels" in (docs / page).read_text(), page
    # the same check, the same number, at a size a test can afford: exactly the limit passes, one pixel more does not
    monkeypatch.setattr(sources, "MAX_SOURCE_PIXELS", 100 * 60)
    at_limit = save(tmp_path / "at.png", RNG.integers(0, 256, (60, 100, 3), dtype=np.uint8))
    summary = render_set(tmp_path / "set", RenderConfig(n_patches=4, size=32, shard_size=4), sources=[at_limit],
                         log=lambda *a: None)
    assert summary.complete
    for ext in ("png", "jpg", "gif"):
        over = save(tmp_path / f"over.{ext}", RNG.integers(0, 256, (60, 101, 3), dtype=np.uint8))
        for read in (load_source, open_rgb):
            with pytest.raises(SourceImageError, match=rf"over.{ext}: image too large, a possible decompression "
                                                       rf"bomb \(limit 6,000 pixels\)"):
                read(over)
        assert open_rgb(save(tmp_path / f"at.{ext}", RNG.integers(0, 256, (60, 100, 3), np.uint8))).size == (100, 60)


def _float_tiff(path, values) -> Path:
    Image.fromarray(np.asarray(values, np.float32), mode="F").save(path)
    return path


def test_float_images_in_unit_or_byte_range_are_scaled_by_the_documented_rule(tmp_path):
    unit = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    src = load_source(_float_tiff(tmp_path / "unit.tif", unit))
    assert src.mode == "F" and (src.rgb[..., 0] == np.rint(unit * 255)).all() and src.rgb.max() == 255
    whole = RNG.integers(0, 256, (40, 60)).astype(np.float32)
    assert (load_source(_float_tiff(tmp_path / "whole.tif", whole)).rgb[..., 1] == whole).all()


@pytest.mark.parametrize("values, found", [
    (np.linspace(0, 4, 2400).reshape(40, 60), "values in [0, 4]"),  # came out black before: clipped as 0..255
    (np.linspace(-1, 1, 2400).reshape(40, 60), "values in [-1, 1]"),
    (np.full((40, 60), 300.0), "values in [300, 300]"),
    (np.where(np.eye(40, 60) > 0, np.nan, 0.5), "NaN or infinite values"),
])
def test_float_images_of_undefined_scale_are_refused_in_one_line(tmp_path, values, found):
    with pytest.raises(SourceImageError, match=r"f.tif: floating-point image (with|holding) ") as e:
        load_source(_float_tiff(tmp_path / "f.tif", values))
    assert found in e.value.message and "\n" not in e.value.message


def test_32_bit_integer_images_beyond_16_bits_are_refused(tmp_path):
    Image.fromarray(np.full((40, 60), 70000, np.int32), mode="I").save(tmp_path / "i.tif")
    with pytest.raises(SourceImageError, match=r"i.tif: 32-bit integer image with values in \[70000, 70000\]"):
        load_source(tmp_path / "i.tif")


def test_multi_frame_images_use_the_first_frame_and_say_so(tmp_path, caplog):
    first, second = RNG.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    frames = [Image.fromarray(first), Image.fromarray(second)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    grey = [f.convert("L") for f in frames]
    grey[0].save(tmp_path / "anim.gif", save_all=True, append_images=grey[1:])
    with caplog.at_level("WARNING", logger="pipeline.sources"):
        assert (load_source(tmp_path / "pages.tif").rgb == first).all()
        assert (load_source(tmp_path / "anim.gif").rgb[..., 0] == np.asarray(frames[0].convert("L"))).all()
        load_source(tmp_path / "anim.gif")  # said once per file
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / 'pages.tif'}: 2 frames; the first is used",
                                                        f"{tmp_path / 'anim.gif'}: 2 frames; the first is used"]
    proc = run_cli("render", "--src", str(tmp_path / "pages.tif"), "--out", str(tmp_path / "out"), "--n-patches",
                   "4", "--size", "32", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'pages.tif'}: 2 frames; the first is used" in proc.stderr.splitlines()


def _pillow_reference(path: Path, min_side: int | None) -> np.ndarray:
    """What decode_rgb gave before OpenCV decoded plain JPEGs: Pillow's draft, load, exif_transpose, convert."""
    from PIL import ImageOps

    from pipeline.sources import draft_request

    with Image.open(path) as img:
        if min_side and min(img.size) >= 2 * min_side:
            img.draft(img.mode if img.mode == "L" else "RGB", draft_request(img.size, min_side))
        img.load()
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.fixture
def imdecode_calls(monkeypatch):
    import cv2

    calls, real = [], cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(a[1]) or real(*a))
    return calls


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("min_side", [None, 40, 18])  # full decode, DCT scaling 1/2 and 1/8 of 200 x 150
@pytest.mark.parametrize("options", [{}, {"progressive": True, "subsampling": 0}])  # baseline 4:2:0; progressive 4:4:4
def test_plain_jpegs_are_decoded_by_opencv_with_pillows_pixels_in_every_orientation(tmp_path, mode, min_side, options,
                                                                                   imdecode_calls):
    from pipeline.sources import decode_rgb

    smooth = np.linspace(0, 255, 200 * 150 * 3).reshape(150, 200, 3)
    pixels = np.clip(smooth + RNG.normal(0, 40, smooth.shape), 0, 255).astype(np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        Image.fromarray(pixels).convert(mode).save(path, exif=exif, quality=90, **options)
        rgb, found_mode = decode_rgb(path.read_bytes(), path, min_side)
        expected = _pillow_reference(path, min_side)
        assert found_mode == mode and rgb.shape == expected.shape, (orientation, rgb.shape, expected.shape)
        assert np.array_equal(rgb, expected), orientation
    assert len(imdecode_calls) == 8  # the OpenCV path was taken, for every orientation


def test_jpegs_opencv_would_misread_are_left_to_pillow(tmp_path, imdecode_calls):
    from pipeline.sources import decode_rgb

    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    rgb, mode = decode_rgb((tmp_path / "c.jpg").read_bytes(), tmp_path / "c.jpg")
    assert mode == "CMYK" and np.array_equal(rgb, _pillow_reference(tmp_path / "c.jpg", None))
    # a truncated stream: OpenCV would return it padded with grey; Pillow refuses it, as before
    save(tmp_path / "t.jpg", RNG.integers(0, 256, (300, 300, 3), dtype=np.uint8), quality=95)
    whole = (tmp_path / "t.jpg").read_bytes()
    with pytest.raises(SourceImageError, match="t.jpg: corrupt or truncated"):
        decode_rgb(whole[: len(whole) // 2], tmp_path / "t.jpg")
    # bytes after the end marker (some cameras append them): Pillow decodes it, with the same pixels as OpenCV's
    padded = whole + b"\0" * 16
    assert np.array_equal(decode_rgb(padded, "padded.jpg")[0], decode_rgb(whole, "t.jpg")[0])
    assert len(imdecode_calls) == 1  # only the intact, plain t.jpg
