"""`probe linear` on the ResNet-18 and ViT backbones (train/models/resnet.py, vit.py) at tiny sizes: every tap is
probed, CIFAR maps above 9,600 dimensions are max-pooled towards 9,600, vector taps are kept whole."""

from __future__ import annotations

import json

from click.testing import CliRunner

from probe.cli import main

QUICK = ("--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu")


def _probe(tmp_path, writers, encoder: str) -> dict:
    data = writers.cifar10(tmp_path / "data", per_batch=4, test=8)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["linear", encoder, "--data", f"cifar10:{data}", "--out", str(out), *QUICK],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())["layers"]


def test_probe_linear_on_resnet18_cifar_pools_the_large_maps(tmp_path, writers):
    layers = _probe(tmp_path, writers, "random:resnet18-cifar:width=32")
    assert list(layers) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    # width 32: 32x32x32 (32,768) -> 17x17 grid, 64x16x16 (16,384) -> 12x12, 128x8x8 = 8,192 and 256x4x4 kept
    assert [layers[n]["dims"] for n in layers] == [32 * 17 * 17, 32 * 17 * 17, 64 * 12 * 12, 128 * 8 * 8,
                                                   256 * 4 * 4]
    assert all(0.0 <= row["top1"] <= 100.0 for row in layers.values())


def test_probe_linear_on_vit_tiny_at_32_px(tmp_path, writers):
    layers = _probe(tmp_path, writers, "random:vit-tiny:input_size=32")
    assert list(layers)[:2] == ["block3", "block3-cls"] and len(layers) == 8
    # 192 x 8 x 8 = 12,288 -> a 7x7 grid (9,408); the class token as it is
    assert layers["block12"]["dims"] == 192 * 7 * 7 and layers["block12-cls"]["dims"] == 192
