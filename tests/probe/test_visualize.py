"""`probe visualize`: activation maximisation (Lucid's regularisers, written with torch) and the streamed top-k
retrieval of the images exciting each unit most (the paper's Figure 5)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.errors import EncoderError, OptionError
from pipeline.pack import pack_set
from probe.cli import main
from probe.datasets import open_data
from probe.encoders import open_encoder, probing_trunk
from probe.retrieval import TopK, retrieval_transform, retrieve_top, unit_scores
from probe.transforms import Normalization
from probe.visualize import (
    FourierImage,
    MaximizeSettings,
    RedirectedReLU,
    maximize_units,
    random_transform,
    random_units,
)

from ..loopback import LoopbackServer

HALF = Normalization.named("half")


def test_activation_maximisation_raises_its_unit_many_times_over():
    encoder = open_encoder("random:cifar")
    units = [("conv1", 0), ("conv2", 3), ("conv4", 5)]
    maximized = maximize_units(encoder, units, MaximizeSettings(size=32, steps=20, seed=0), HALF)
    assert [(m.tap, m.unit) for m in maximized] == units
    for m in maximized:
        assert m.end > 10 * m.start > 0, (m.tap, m.unit, m.start, m.end)
        assert m.image.shape == (3, 32, 32) and 0 <= m.image.min() and m.image.max() <= 1
    again = maximize_units(encoder, units[:1], MaximizeSettings(size=32, steps=3, seed=0), HALF)
    assert torch.equal(again[0].image, maximize_units(encoder, units[:1], MaximizeSettings(size=32, steps=3, seed=0),
                                                      HALF)[0].image)  # deterministic from the seed


def test_a_unit_zero_on_the_start_image_still_rises():
    """The taps are post-ReLU: a unit whose ReLU is closed everywhere on the grey start would get no gradient and
    stay grey. The redirected ReLU gradient (Lucid's) lets the optimisation open it."""
    encoder = open_encoder("random:cifar")
    with torch.no_grad():
        encoder.module.conv1.bn.bias[7] = -0.1  # closed everywhere on the near-grey start image
    closed = maximize_units(encoder, [("conv1", 7), ("conv2", 3)], MaximizeSettings(size=32, steps=60, seed=0),
                            HALF)
    assert closed[0].start == 0 and closed[0].end > 0.01, (closed[0].start, closed[0].end)
    x = torch.tensor([[-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    RedirectedReLU()(x).mul(torch.tensor([[1.0, -1.0, -1.0], [1.0, -1.0, -1.0]])).sum().mul(-1).backward()
    # row 0 has an open input: ReLU's own gradient; row 1 none: passed on where it raises the input, not lowered
    assert x.grad.tolist() == [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]


def test_the_parameterisation_starts_grey_and_the_transforms_keep_the_range():
    generator = torch.Generator().manual_seed(0)
    images = FourierImage(2, 16, generator)()
    assert images.shape == (2, 3, 16, 16) and (images - 0.5).abs().max() < 0.1  # low contrast at the start
    moved = random_transform(torch.ones(2, 3, 16, 16), MaximizeSettings(jitter=0.25), generator)
    assert moved.shape == (2, 3, 16, 16) and 0.5 - 1e-6 <= moved.min() and moved.max() <= 1 + 1e-6
    assert (moved < 0.99).any()  # translated: grey came in at an edge


def test_units_are_drawn_per_tap_and_checked():
    encoder = open_encoder("random:cifar")
    units = random_units(encoder, ["conv2", "conv1"], 3, seed=0, size=32)
    assert [tap for tap, _ in units] == ["conv1"] * 3 + ["conv2"] * 3 and len(set(units)) == 6
    assert units == random_units(encoder, ["conv1", "conv2"], 3, seed=0, size=32)
    with pytest.raises(EncoderError, match="no layer conv9"):
        maximize_units(encoder, [("conv9", 0)], MaximizeSettings(steps=1), HALF)
    with pytest.raises(OptionError, match="tap conv1 has 96 units, so unit 96 does not exist"):
        maximize_units(encoder, [("conv1", 96)], MaximizeSettings(steps=1), HALF)


def _brute_force(scores: torch.Tensor, k: int) -> list[list[int]]:
    # all scores at once, sorted by score (descending), ties in stream order
    return [torch.sort(column, descending=True, stable=True).indices[:k].tolist() for column in scores.T]


def test_top_k_equals_a_brute_force_sort_and_keeps_memory_bounded():
    generator = torch.Generator().manual_seed(1)
    scores = (torch.rand(203, 5, generator=generator) * 20).round()  # many ties
    items = torch.arange(203).view(-1, 1, 1).expand(-1, 2, 2)  # each item knows its position
    best = TopK(units=5, k=9)
    for start in range(0, 203, 17):
        stop = min(start + 17, 203)
        best.push(scores[start:stop], torch.arange(start, stop), items[start:stop])
        assert best.held <= 9 and best.items.shape[:2] == (5, best.held)  # bounded: k per unit
    assert best.positions.tolist() == _brute_force(scores, 9)
    assert torch.equal(best.items[:, :, 0, 0], best.positions)  # each item travelled with its score
    assert torch.equal(best.scores, scores.gather(0, best.positions.T).T)


def test_a_short_stream_keeps_what_it_has():
    best = TopK(units=2, k=9)
    best.push(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([0, 1]), torch.zeros(2, 3))
    assert best.positions.tolist() == [[1, 0], [0, 1]] and best.held == 2


def test_retrieval_equals_sorting_every_image(tmp_path, writers):
    data = open_data(f"cifar10:{writers.cifar10(tmp_path, per_batch=8)}")
    encoder = open_encoder("random:cifar")
    units = [("conv1", 2), ("conv3", 7)]
    found = retrieve_top(encoder, data, units, k=4, normalization=HALF, batch_size=7)
    transform = retrieval_transform(data, 32)
    images = torch.stack([transform(image) for image, _ in data.train])
    with torch.no_grad():
        features = probing_trunk(encoder).forward_taps((images - 0.5) / 0.5, ["conv1", "conv3"])
    expected = _brute_force(unit_scores(features, units), 4)
    assert [r.positions for r in found] == expected
    first = found[0]
    assert torch.equal(first.images[0], (images[expected[0][0]] * 255).round().to(torch.uint8))


def test_retrieval_streams_packed_shards_over_http(tmp_path, writers):
    for split in ("train", "val"):
        writers.image_tree(tmp_path / "src" / split, {"ant": 3, "bee": 3}, size=40, seed=len(split))
        pack_set(tmp_path / "src" / split, tmp_path / "shards" / split, shard_size=2, log=lambda m: None)
    encoder = open_encoder("random:alexnet-small")
    with LoopbackServer(tmp_path / "shards") as server:
        data = open_data(f"shards:{server.url}/")
        found = retrieve_top(encoder, data, [("conv1", 0)], k=3, normalization=HALF, batch_size=4)
    assert len(found[0].positions) == 3 and found[0].images.shape == (3, 3, 224, 224)
    assert found[0].scores == sorted(found[0].scores, reverse=True)


def test_the_command_writes_one_sheet_with_maximised_and_retrieved_images(tmp_path, writers):
    folder = writers.cifar10(tmp_path, per_batch=4)
    out = tmp_path / "units.png"
    result = CliRunner().invoke(main, ["visualize", "random:cifar", "--out", str(out), "--layers", "conv1,conv2",
                                       "--units", "2", "--size", "32", "--steps", "3", "--retrieve",
                                       f"cifar10:{folder}", "--top", "4", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("mean activation") == 4
    width, height = Image.open(out).size
    assert width > height > 100  # two rows of four panels
    bad = CliRunner().invoke(main, ["visualize", "random:cifar", "--out", str(tmp_path / "x.png"),
                                    "--unit", "conv2:500", "--no-progress"])
    assert bad.exit_code != 0 and "unit 500 does not exist" in bad.output
    assert not (tmp_path / "x.png").exists()
