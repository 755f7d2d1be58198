"""The reduced-width ResNet-18 names (`train --arch` takes a name): the same network as the width option."""

import pytest
import torch

from train.models import build_encoder
from train.models.resnet import REDUCED_WIDTHS


@pytest.mark.parametrize("width", REDUCED_WIDTHS)
def test_a_reduced_width_name_builds_resnet18_cifar_at_that_width(width):
    torch.manual_seed(0)
    named = build_encoder(f"resnet18-cifar-w{width}")
    torch.manual_seed(0)
    option = build_encoder("resnet18-cifar", width=width)
    assert named.out_channels == 8 * width
    assert named.state_dict().keys() == option.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), option.state_dict().values(),
                                                 strict=True))
    x = torch.randn(2, 3, 32, 32)
    assert {k: v.shape[1:] for k, v in named.eval().forward_taps(x).items()} == {
        "stem": (width, 32, 32), "layer1": (width, 32, 32), "layer2": (2 * width, 16, 16),
        "layer3": (4 * width, 8, 8), "layer4": (8 * width, 4, 4)}
