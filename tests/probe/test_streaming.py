"""The ImageNet-style path: augmented batches, one trunk forward per batch for all probes, 10 crops."""

from __future__ import annotations

from probe.datasets import open_data
from probe.encoders import open_encoder
from probe.linear import run_linear
from probe.protocols import ProbeProtocol, ProbeRun
from probe.transforms import Normalization, imagenet_test_transform


def test_one_trunk_forward_feeds_every_probe(tmp_path, writers, monkeypatch):
    writers.image_tree(tmp_path / "train", {"cat": 2, "dog": 2}, size=48)
    writers.image_tree(tmp_path / "val", {"cat": 1, "dog": 1}, size=48)
    data = open_data(f"imagefolder:{tmp_path}")
    encoder = open_encoder("random:alexnet-small")
    calls = []
    original = type(encoder.module).forward_taps

    def counting(self, images, layers=None):
        calls.append((images.shape[0], tuple(layers)))
        return original(self, images, layers)

    monkeypatch.setattr(type(encoder.module), "forward_taps", counting)
    protocol = ProbeProtocol(epochs=1, batch_size=2, seed=0)
    run = run_linear(encoder, data, protocol, Normalization.named("imagenet"), ProbeRun(progress=False),
                     layers=["conv1", "conv3", "conv5"])
    # one planning forward of a zero image, two training batches of 2 images, then the test images one by
    # one (batch 2 // 10 crops), each image's 10 crops in a single forward
    assert [n for n, _ in calls] == [1, 2, 2, 10, 10]
    assert {layers for _, layers in calls} == {("conv1", "conv3", "conv5")}
    assert [p.dims for p in run.plans] == [64 * 12 * 12, 384 * 5 * 5, 256 * 6 * 6]
    assert run.protocol["ten_crop"] and not run.protocol["feature_cache"]
    assert set(run.scores) == {"conv1", "conv3", "conv5"}


def test_ten_crop_input_is_the_corners_centre_and_their_flips(tmp_path, writers):
    from PIL import Image

    image = Image.open(writers.image_tree(tmp_path, {"x": 1}, size=300) / "x" / "0000.png").convert("RGB")
    crops = imagenet_test_transform(Normalization((0, 0, 0), (1, 1, 1)), resize=256, crop=224)(image)
    assert tuple(crops.shape) == (10, 3, 224, 224)
    # crops 0..4 are top-left, top-right, bottom-left, bottom-right, centre; 5..9 the same crops of the
    # mirrored image, so the mirrored top-left is the flipped top-right, and so on
    assert (crops[5:] - crops[[1, 0, 3, 2, 4]].flip(-1)).abs().max() < 1e-6
    assert (crops[0] - crops[4]).abs().max() > 0  # a corner is not the centre
