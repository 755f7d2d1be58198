"""The ResNet-18 and ViT backbones (train/models/resnet.py, vit.py): the documented tap shapes, stems, patch sizes,
the width option, and what for_probing folds. The contract itself is checked for them by test_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train.models import build_encoder
from train.models.contract import tap_shapes

# docs/architecture.md's backbone table: tap -> (C, H, W) or (D,)
RESNET18_TAPS = {"stem": (64, 112, 112), "layer1": (64, 56, 56), "layer2": (128, 28, 28), "layer3": (256, 14, 14),
                 "layer4": (512, 7, 7)}
RESNET18_CIFAR_TAPS = {"stem": (64, 32, 32), "layer1": (64, 32, 32), "layer2": (128, 16, 16),
                       "layer3": (256, 8, 8), "layer4": (512, 4, 4)}


@pytest.mark.parametrize(("arch", "expected"), [("resnet18", RESNET18_TAPS), ("resnet18-cifar", RESNET18_CIFAR_TAPS)])
def test_resnet_taps_have_the_documented_shapes(arch, expected):
    enc = build_encoder(arch)
    assert tap_shapes(enc, enc.taps) == expected
    assert enc(torch.zeros(2, 3, enc.input_size, enc.input_size)).shape == (2, 512)


def test_resnet_stems_imagenet_and_cifar():
    imagenet, cifar = build_encoder("resnet18"), build_encoder("resnet18-cifar")
    assert imagenet.stem[0].kernel_size == (7, 7) and imagenet.stem[0].stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert cifar.stem[0].kernel_size == (3, 3) and cifar.stem[0].stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    assert imagenet.input_size == 224 and cifar.input_size == 32
    # ResNet-18: 2 BasicBlocks per stage, about 11.2M parameters at full width
    assert [len(getattr(cifar, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert 11.1e6 < sum(p.numel() for p in cifar.parameters()) < 11.2e6


def test_resnet_width_scales_every_stage():
    enc = build_encoder("resnet18-cifar", width=8)
    assert {name: shape[0] for name, shape in tap_shapes(enc, enc.taps).items()} == {
        "stem": 8, "layer1": 8, "layer2": 16, "layer3": 32, "layer4": 64}
    assert enc.arch_kwargs == {"width": 8}
    with pytest.raises(ValueError, match="width"):
        build_encoder("resnet18", width=0)


def test_resnet_for_probing_leaves_no_batchnorm():
    enc = build_encoder("resnet18-cifar", width=8)
    folded = enc.for_probing()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    bn_count = sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules())
    assert len(enc.conv_bn_pairs()) == bn_count == 1 + 8 * 2 + 3  # stem, two per block, three downsamples


@pytest.mark.parametrize(("arch", "size", "width", "grid", "patch"), [
    ("vit-tiny", 32, 192, 8, 4), ("vit-tiny", 224, 192, 14, 16), ("vit-small", 32, 384, 8, 4)])
def test_vit_taps_patch_maps_and_class_tokens(arch, size, width, grid, patch):
    enc = build_encoder(arch, input_size=size).eval()
    assert enc.taps == ("block3", "block3-cls", "block6", "block6-cls", "block9", "block9-cls", "block12",
                        "block12-cls")
    assert enc.patch_size == patch and enc.first_layer_weight().shape == (width, 3, patch, patch)
    shapes = tap_shapes(enc, enc.taps)
    for block in (3, 6, 9, 12):
        assert shapes[f"block{block}"] == (width, grid, grid) and shapes[f"block{block}-cls"] == (width,)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        taps = enc.forward_taps(x, ["block6", "block6-cls"])
        # the map is the patch tokens in row-major grid order; the class token is token 0, of the same pass
        tokens = enc.groups[1](enc.groups[0](x))
        torch.testing.assert_close(taps["block6-cls"], tokens[:, 0])
        torch.testing.assert_close(taps["block6"][:, :, 1, 2], tokens[:, 1 + 1 * grid + 2])
        torch.testing.assert_close(enc(x), enc.norm(enc.groups[3](enc.groups[2](tokens)))[:, 0])


def test_vit_patch_size_must_divide_the_input():
    assert build_encoder("vit-tiny", input_size=48, patch_size=8).grid == 6
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_encoder("vit-tiny", input_size=30)
