"""The supervised baseline's ImageFolder loader decodes as the renderer does, and names a bad image in one line."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from common.errors import DataError
from train.cli import main
from train.data.sources import LabelledSource

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _folder(root, n=8):
    for c, colour in enumerate([RED, BLUE]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (24, 20), colour).save(root / f"class{c}" / f"{i}.png")
    return root


def _image(source, name):
    base = source.dataset.base
    i = next(k for k, (path, _) in enumerate(base.samples) if path.endswith(name))
    return source.dataset[i][0].permute(1, 2, 0).numpy()


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    root = _folder(tmp_path / "set")
    Image.fromarray(np.full((20, 24), 30000, dtype=np.uint16)).save(root / "class0" / "grey16.png")
    img = _image(LabelledSource(root, load_size=8), "grey16.png")
    assert abs(int(img.mean()) - 30000 * 255 // 65535) <= 1  # 116; PIL's convert('RGB') gave 255


def test_exif_orientation_is_applied(tmp_path):
    root = _folder(tmp_path / "set")
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20], stored[:, 20:] = RED, BLUE  # stored left/right; orientation 6 shows it rotated 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "class0" / "rotated.jpg", exif=exif, quality=95)
    img = _image(LabelledSource(root, load_size=8), "rotated.jpg").astype(int)
    top, bottom = img[0].mean(axis=0), img[-1].mean(axis=0)
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # red above blue, as a viewer shows it


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("bad", ["truncated", "empty", "text"])
def test_unreadable_image_is_one_line_naming_the_file(tmp_path, bad, workers):
    root = _folder(tmp_path / "set" / "train", n=4).parent
    path = root / "train" / "class1" / "bad.jpg"
    if bad == "truncated":
        Image.new("RGB", (64, 64), RED).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"" if bad == "empty" else b"not an image\n")
    out = tmp_path / "run"
    args = ["supervised", str(root), "--out", str(out), "--arch", "cifar", "--max-steps", "1",
            "--workers", str(workers), "--no-progress", "--head-dim", "0"]
    r = CliRunner().invoke(main, [*args, "--batch-size", "9"])  # all 9 images: the first batch holds the bad one
    assert r.exit_code == 1 and r.output.startswith(f"Error: {path}: "), r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not (out / "checkpoint.pt").exists() and not (out / "encoder.pt").exists()
    path.unlink()  # the user removes the bad file: the rerun is not blocked by what the failed run left
    r = CliRunner().invoke(main, [*args, "--batch-size", "8"])
    assert r.exit_code == 0, r.output


def test_loader_raises_data_error_for_a_bad_image(tmp_path):
    root = _folder(tmp_path / "set", n=2)
    (root / "class0" / "zero.png").write_bytes(b"")
    source = LabelledSource(root, load_size=8)
    with pytest.raises(DataError, match=r"zero.png: empty file"):
        list(source.loader(0, 5, shuffle=False))


def test_a_labelled_set_is_identified_by_content_not_location(tmp_path):
    """--resume compares this identity: a moved copy is the same set; a file replaced or relabelled is not."""
    import shutil

    root = _folder(tmp_path / "set")
    identity = LabelledSource(root, load_size=8).identity
    moved = shutil.copytree(root, tmp_path / "moved")
    assert LabelledSource(moved, load_size=8).identity == identity
    Image.new("RGB", (30, 30), BLUE).save(moved / "class0" / "0.png")  # another picture under the same name
    assert LabelledSource(moved, load_size=8).identity["content_sha256"] != identity["content_sha256"]
    relabelled = shutil.copytree(root, tmp_path / "relabelled")
    shutil.move(relabelled / "class0" / "0.png", relabelled / "class1" / "extra.png")
    relabelled_identity = LabelledSource(relabelled, load_size=8).identity
    assert relabelled_identity["num_samples"] == identity["num_samples"]
    assert relabelled_identity["content_sha256"] != identity["content_sha256"]


def test_resume_on_another_labelled_set_is_refused(tmp_path):
    root = _folder(tmp_path / "set")
    common = ["--out", str(tmp_path / "run"), "--arch", "cifar", "--device", "cpu", "--workers", "0",
              "--batch-size", "4", "--head-dim", "0"]
    assert CliRunner().invoke(main, ["supervised", str(root), *common, "--max-steps", "1"]).exit_code == 0
    Image.new("RGB", (30, 30), BLUE).save(root / "class0" / "0.png")
    r = CliRunner().invoke(main, ["supervised", str(root), *common, "--max-steps", "2", "--resume"])
    assert r.exit_code == 1 and "other data or settings (data_identity.content_sha256" in r.output, r.output
