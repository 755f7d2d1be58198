"""`probe style`: Gatys style transfer on any encoder's taps (the paper's Figure 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.errors import EncoderError, SourceImageError
from probe.cli import main
from probe.encoders import open_encoder
from probe.sheets import load_image
from probe.style import StyleSettings, gram_matrix, stylize
from probe.transforms import Normalization

HALF = Normalization.named("half")


def _pictures():
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 20, 24, generator=generator)
    stripes = (torch.arange(28) % 4 < 2).float().view(1, 1, 1, 28).expand(1, 3, 16, 28).clone()
    stripes[:, 1] *= 0.3  # a style unlike the content: coloured stripes
    return content, stripes


def test_gram_matrix_is_normalised_by_the_map_size():
    features = torch.ones(2, 3, 4, 5)
    assert torch.allclose(gram_matrix(features), torch.full((2, 3, 3), 20 / 60))
    assert gram_matrix(torch.ones(2, 6)).shape == (2, 6, 6)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_style_loss_falls_over_the_optimisation(optimizer):
    content, style = _pictures()
    encoder = open_encoder("random:cifar")
    settings = StyleSettings(steps=25, optimizer=optimizer, lr=0.05 if optimizer == "adam" else None)
    result = stylize(encoder, content, style, settings, HALF)
    history = result.history
    assert len(history) >= 25 and result.content_tap == "conv3" and result.style_taps == encoder.taps
    assert history[-1]["style"] < 0.5 * history[0]["style"]
    assert history[0]["content"] == 0  # started from the content image
    assert result.image.shape == content.shape and 0 <= result.image.min() and result.image.max() <= 1


def test_stylisation_is_deterministic_from_the_seed():
    content, style = _pictures()
    encoder = open_encoder("random:cifar")
    settings = StyleSettings(steps=6, init="noise", seed=3)
    first = stylize(encoder, content, style, settings, HALF).image
    assert torch.equal(first, stylize(encoder, content, style, settings, HALF).image)
    other = stylize(encoder, content, style, StyleSettings(steps=6, init="noise", seed=4), HALF).image
    assert not torch.equal(first, other)


def test_a_tap_the_encoder_lacks_is_named():
    content, style = _pictures()
    with pytest.raises(EncoderError, match="has no layer conv9 .*it has conv1, conv2, conv3, conv4"):
        stylize(open_encoder("random:cifar"), content, style, StyleSettings(style_taps=("conv1", "conv9")), HALF)


def test_sources_are_decoded_as_everywhere_else(tmp_path):
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 40 x 20 file is shown 20 wide, 40 high
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg", 16).shape == (1, 3, 16, 8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SourceImageError, match="broken.png"):
        load_image(tmp_path / "broken.png", 16)


def _write_pictures(tmp_path):
    content, style = _pictures()
    for name, picture in (("content.png", content), ("style.png", style)):
        pixels = (picture[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / name)
    return tmp_path / "content.png", tmp_path / "style.png"


def test_compare_writes_one_sheet_with_every_encoder(tmp_path):
    content, style = _write_pictures(tmp_path)
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["style", "random:cifar", "--compare", "random:cifar:leaky_relu=true",
                                       "--content", str(content), "--style", str(style), "--out", str(out),
                                       "--size", "24", "--steps", "4", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("style loss") == 2
    width, height = Image.open(out).size
    assert width > 3 * height  # content, style and two results side by side


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    content, style = _write_pictures(tmp_path)
    out = tmp_path / "styled.png"
    args = ["style", "random:cifar", "--content", str(content), "--style", str(style), "--out", str(out),
            "--size", "16", "--steps", "2", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--content-tap", "conv7"])
    assert result.exit_code != 0 and "no layer conv7" in result.output and not out.exists()
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = CliRunner().invoke(main, [*args[:3], str(tmp_path / "empty.jpg"), *args[4:]])
    assert result.exit_code != 0 and "empty.jpg: empty file" in result.output and not out.exists()
    assert len(result.output.strip().splitlines()) == 1
