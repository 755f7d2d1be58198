import pytest
import torch
from torch import nn

from train.models import ENCODERS, TapEncoder, build_encoder, list_encoders, output_shape
from train.models.contract import check_encoder
from train.models.encoder_io import load_encoder, save_encoder
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


# -- The encoder contract, checked for every registered encoder (plugins included), as timm's tests enumerate
# list_models(): a new encoder needs no edit here. ------------------------------------------------------------

def _with_bn_statistics(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """Non-identity BatchNorm statistics and affine parameters (negative scales included), as training leaves."""
    generator = torch.Generator().manual_seed(seed)
    for module in encoder.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.randn(n, generator=generator))
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return encoder


def _images(encoder, count: int = 2) -> torch.Tensor:
    return torch.randn(count, encoder.input_channels, encoder.input_size, encoder.input_size,
                       generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", list_encoders())
def test_contract_taps_in_network_order(arch):
    torch.manual_seed(0)
    enc = build_encoder(arch).eval()
    assert isinstance(enc, TapEncoder) and isinstance(enc, nn.Module)
    assert enc.arch == arch and isinstance(enc.taps, tuple) and len(set(enc.taps)) == len(enc.taps) >= 1
    x = _images(enc)
    with torch.no_grad():
        taps = enc.forward_taps(x)
        assert list(taps) == list(enc.taps)
        for name, value in taps.items():
            assert value.dim() in (2, 4) and value.shape[0] == 2, name  # (B, C, H, W) or (B, D)
            # asked alone, a tap is the same tensor as in the full pass (the pass stops at the deepest one)
            torch.testing.assert_close(enc.forward_taps(x, [name])[name], value)
        if len(enc.taps) > 1:  # keyed in network order whatever the order asked
            assert list(enc.forward_taps(x, [enc.taps[-1], enc.taps[0]])) == [enc.taps[0], enc.taps[-1]]
        assert enc(x).shape[0] == 2 and output_shape(enc) == tuple(enc(x).shape[1:])
    with pytest.raises(KeyError):
        enc.forward_taps(x, ["no-such-tap"])
    with pytest.raises(KeyError):
        enc.tap_module("no-such-tap")


@pytest.mark.parametrize("arch", list_encoders())
def test_contract_tap_modules_partition_the_parameters(arch):
    enc = build_encoder(arch)
    submodules = list(enc.modules())
    owned = [{id(p) for p in enc.tap_module(name).parameters()} for name in enc.taps]
    assert all(any(m is enc.tap_module(name) for m in submodules) for name in enc.taps)
    assert sum(map(len, owned)) == len(set().union(*owned))  # no parameter in two taps' modules
    assert set().union(*owned) == {id(p) for p in enc.parameters()}  # and none in no tap's module


@pytest.mark.parametrize("arch", list_encoders())
def test_contract_first_layer_weight(arch):
    enc = build_encoder(arch)
    weight = enc.first_layer_weight()
    if weight is None:  # an encoder without learnt first-layer filters says so
        return
    out, channels, height, width = weight.shape
    assert channels == enc.input_channels and height == width
    assert any(weight.data_ptr() == p.data_ptr() for p in enc.tap_module(enc.taps[0]).parameters())


@pytest.mark.parametrize("arch", list_encoders())
def test_contract_for_probing_is_an_equivalent_eval_copy(arch):
    torch.manual_seed(0)
    enc = _with_bn_statistics(build_encoder(arch)).train()
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    probing = enc.for_probing()
    assert not probing.training and enc.training  # a copy in eval mode; the original keeps its mode
    assert not {id(p) for p in probing.parameters()} & {id(p) for p in enc.parameters()}
    x = _images(enc.eval(), 3)
    with torch.no_grad():
        before, after = enc.forward_taps(x), probing.forward_taps(x)
    for name in enc.taps:
        torch.testing.assert_close(after[name], before[name], rtol=1e-4, atol=1e-4)
        assert before[name].abs().max() > 0.1  # the comparison is not between zeros
    assert all(torch.equal(v, state[k]) for k, v in enc.state_dict().items())  # the original is untouched


@pytest.mark.parametrize("arch", list_encoders())
def test_contract_encoder_file_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    enc = _with_bn_statistics(build_encoder(arch)).eval()
    save_encoder(tmp_path / "encoder.pt", enc, arch, {})
    loaded, info = load_encoder(tmp_path / "encoder.pt")
    x = _images(enc)
    with torch.no_grad():
        for name, value in enc.forward_taps(x).items():
            assert torch.equal(loaded.forward_taps(x)[name], value)
    assert info["arch"] == arch and loaded.taps == enc.taps


def test_an_encoder_that_breaks_the_contract_is_refused_naming_what_it_lacks():
    with pytest.raises(TypeError, match="missing taps, input_size, input_channels, forward_taps"):
        check_encoder(nn.Linear(2, 2), "linear")
    enc = build_encoder("cifar")
    enc.taps = ["conv1"]  # a list, not a tuple
    with pytest.raises(TypeError, match="tuple of unique names"):
        check_encoder(enc, "cifar")
    enc.taps, enc.input_size = ("conv1",), 32.0
    with pytest.raises(TypeError, match="input_size must be a positive int"):
        check_encoder(enc, "cifar")
