import pytest
import torch
from torch import nn

from train.models import ENCODERS, build_encoder
from train.models.gan import DCGANGenerator, upsample_block

SIZES = {"alexnet": 224, "alexnet-small": 224, "cifar": 32}
CHANNELS = {
    "alexnet": [96, 256, 384, 384, 256],
    "alexnet-small": [64, 192, 384, 256, 256],
    "cifar": [96, 256, 384, 384],
}


def test_registry_has_the_papers_networks():
    assert set(SIZES) <= set(ENCODERS)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_encoder("resnet-9000")


@pytest.mark.parametrize("arch", sorted(SIZES))
def test_blocks_and_features(arch):
    torch.manual_seed(0)
    enc = build_encoder(arch)
    names = tuple(f"conv{i}" for i in range(1, len(CHANNELS[arch]) + 1))
    assert enc.taps == names
    for name, ch in zip(names, CHANNELS[arch], strict=True):
        block = getattr(enc, name)
        assert isinstance(block, nn.Sequential)
        assert isinstance(block.conv, nn.Conv2d) and block.conv.out_channels == ch
        assert isinstance(block.bn, nn.BatchNorm2d) and isinstance(block.relu, nn.ReLU)
    enc.eval()
    x = torch.randn(2, 3, SIZES[arch], SIZES[arch])
    feats = enc.forward_taps(x)
    assert list(feats) == list(names)
    for name, f in feats.items():
        assert f.min() >= 0  # post-ReLU
        assert f.shape[1] == getattr(enc, name).conv.out_channels
    # forward == last block including its pool; post-ReLU features are taken before the pool
    last = getattr(enc, names[-1])
    expected = last.pool(feats[names[-1]]) if hasattr(last, "pool") else feats[names[-1]]
    torch.testing.assert_close(enc(x), expected)
    # asking for one early layer gives the same tensor as the full pass
    torch.testing.assert_close(enc.forward_taps(x, ["conv2"])["conv2"], feats["conv2"])
    with pytest.raises(KeyError):
        enc.forward_taps(x, ["conv9"])


def test_alexnet_geometry_matches_the_paper():
    enc = build_encoder("alexnet").eval()
    feats = enc.forward_taps(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[2:]) for f in feats.values()] == [(55, 55), (27, 27), (13, 13), (13, 13), (13, 13)]
    assert enc.output_shape() == (256, 6, 6)
    assert [hasattr(getattr(enc, n), "pool") for n in enc.taps] == [True, True, False, False, True]
    c = enc.conv1.conv
    assert c.kernel_size == (11, 11) and c.stride == (4, 4)
    assert enc.conv2.conv.kernel_size == (5, 5)


def test_cifar_encoder_kernels_and_strides():
    enc = build_encoder("cifar")
    convs = [getattr(enc, n).conv for n in enc.taps]
    assert [c.kernel_size[0] for c in convs] == [7, 5, 3, 3]
    assert [c.stride[0] for c in convs] == [3, 2, 2, 1]
    feats = enc.eval().forward_taps(torch.randn(1, 3, 32, 32))
    assert feats["conv1"][0].numel() == 9600  # the probes' conv1 size without pooling


def test_options_leaky_in_channels_sobel():
    enc = build_encoder("cifar", leaky_relu=True)
    assert isinstance(enc.conv1.relu, nn.LeakyReLU) and enc.conv1.relu.negative_slope == pytest.approx(0.2)
    f = enc.eval().forward_taps(torch.randn(2, 3, 32, 32))["conv1"]
    assert f.min() < 0  # leaky: negative values survive
    enc2 = build_encoder("alexnet", in_channels=2)
    assert enc2.conv1.conv.in_channels == 2
    enc2(torch.randn(1, 2, 224, 224))
    sob = build_encoder("alexnet", sobel=True)
    assert sob.conv1.conv.in_channels == 2
    assert sob(torch.randn(1, 3, 224, 224)).shape == (1, 256, 6, 6)
    # a constant image has no gradients: Sobel output is zero away from the zero-padded border
    flat = sob.sobel(torch.full((1, 3, 16, 16), 0.7))
    assert flat[..., 1:-1, 1:-1].abs().max() < 1e-6
    assert not any(k.startswith("sobel") for k in sob.state_dict())


def test_bn_can_be_folded_into_conv():
    # What the probe does: fold eval-mode BN into conv; the block's activation must not change.
    torch.manual_seed(0)
    enc = build_encoder("cifar")
    enc.train()
    for _ in range(3):
        enc(torch.randn(8, 3, 32, 32))  # give BN non-trivial running stats
    enc.eval()
    x = torch.randn(2, 3, 32, 32)
    ref = enc.forward_taps(x, ["conv1"])["conv1"]
    b = enc.conv1
    scale = b.bn.weight / torch.sqrt(b.bn.running_var + b.bn.eps)
    w = b.conv.weight * scale[:, None, None, None]
    bias = (b.conv.bias - b.bn.running_mean) * scale + b.bn.bias
    folded = torch.relu(nn.functional.conv2d(x, w, bias, b.conv.stride, b.conv.padding))
    torch.testing.assert_close(folded, ref, atol=1e-5, rtol=1e-4)


def test_resize_upsampling_cannot_paint_a_checkerboard_on_a_flat_map():
    """A transposed 4x4/2 convolution turns a flat map into a period-2 pattern (the artefact a critic learns to
    detect); nearest resize + 3x3 convolution keeps it flat away from the border."""
    torch.manual_seed(0)
    flat = torch.ones(1, 16, 8, 8)
    interior = slice(2, -2)
    for mode, periodic in (("transposed", True), ("resize", False)):
        out = nn.Sequential(*upsample_block(16, 4, mode, bias=True))(flat).detach()
        core = out[..., interior, interior]
        spread = (core - core.mean(dim=(-2, -1), keepdim=True)).abs().amax().item()
        assert (spread > 1e-3) is periodic, mode
    g = DCGANGenerator(z_dim=8, size=32, width=8, upsampling="resize")
    assert g(torch.randn(3, 8)).shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="resize"):
        DCGANGenerator(z_dim=8, size=32, width=8, upsampling="bilinear")
