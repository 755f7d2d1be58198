"""The linear-probe protocol's parts: BN absorption, pooled sizes, probe training, 10-crop averaging."""

from __future__ import annotations

import torch
from torch import nn

from probe.feature_cache import FeatureCache
from probe.features import FeatureReducer, FrozenFeatures, plan_layers
from probe.heads import LinearProbes
from probe.linear import ProbeProtocol, evaluate_probes, train_probes
from probe.scoring import average_crops, topk_correct
from train.models import build_encoder
from train.models.contract import select_taps
from train.models.folding import fold_conv_bn


def _with_trained_bn_statistics(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would."""
    generator = torch.Generator().manual_seed(seed)
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(n, generator=generator))  # negative scales included
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return encoder.eval()


def test_absorbing_batchnorm_leaves_every_layer_output_unchanged():
    torch.manual_seed(0)
    encoder = _with_trained_bn_statistics(build_encoder("cifar"))
    folded = encoder.for_probing()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = encoder.forward_taps(images)
        after = folded.forward_taps(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())  # the original is untouched
    for name in encoder.taps:
        torch.testing.assert_close(after[name], before[name], rtol=1e-4, atol=1e-4)
        assert before[name].abs().max() > 0.1  # the comparison is not between zeros


def test_folding_a_convolution_without_bias():
    conv = nn.Conv2d(2, 4, 3, bias=False)
    bn = _with_trained_bn_statistics(nn.Sequential(nn.BatchNorm2d(4)))[0]
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_alexnet_probes_are_pooled_to_the_papers_dimensions():
    trunk = build_encoder("alexnet").for_probing()
    plans = plan_layers(trunk, list(trunk.taps), 224, reduce=True)
    assert [p.dims for p in plans] == [9600, 9216, 9600, 9600, 9216]
    assert [p.shape[1] for p in plans] == [55, 27, 13, 13, 13]
    features = FrozenFeatures(trunk, plans)(torch.zeros(2, 3, 224, 224))
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "conv1": (2, 9600), "conv2": (2, 9216), "conv3": (2, 9600), "conv4": (2, 9600), "conv5": (2, 9216)}


class _MapAndVector(nn.Module):
    """A minimal contract encoder with taps that are not AlexNet's: a 64 x 30 x 30 map and a 16-d vector."""

    taps = ("map", "vec")
    input_size = 64
    input_channels = 3

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 5, stride=2)
        self.fc = nn.Linear(64, 16)

    def forward_taps(self, x, names=None):
        wanted = select_taps(self.taps, names)
        out = {"map": torch.relu(self.conv(x))}
        if "vec" in wanted:
            out["vec"] = self.fc(out["map"].mean(dim=(2, 3)))
        return {name: value for name, value in out.items() if name in wanted}


def test_any_spatial_tap_is_pooled_to_about_9600_dims_and_vectors_never():
    trunk = _MapAndVector().eval()
    plans = plan_layers(trunk, ["map", "vec"], 64, reduce=True)
    assert [(p.shape, p.pooled_side, p.dims) for p in plans] == [((64, 30, 30), 12, 64 * 12 * 12), ((16,), None, 16)]
    features = FrozenFeatures(trunk, plans)(torch.rand(2, 3, 64, 64))
    assert {name: tuple(f.shape) for name, f in features.items()} == {"map": (2, 9216), "vec": (2, 16)}
    # CIFAR style: a map above 9,600 dimensions is pooled as well (a ResNet stem's 64 x 32 x 32 would make a
    # 13 GB feature cache of CIFAR-10's training set); at most 9,600 it is kept whole (below)
    cifar_style = plan_layers(trunk, ["map", "vec"], 64, reduce=False)
    assert [(p.pooled_side, p.dims) for p in cifar_style] == [(12, 64 * 12 * 12), (None, 16)]


def test_cifar_probes_keep_the_whole_map():
    trunk = build_encoder("cifar")
    plans = plan_layers(trunk, ["conv1", "conv4"], 32, reduce=False)
    assert [(p.pooled_side, p.dims) for p in plans] == [(None, 96 * 10 * 10), (None, 384 * 3 * 3)]


def test_a_probe_separates_a_linearly_separable_problem():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (700,), generator=generator)
    # four well separated class centres in 16 dimensions: a linear classifier can be (nearly) perfect
    centres = 6.0 * torch.eye(4, 16)
    features = centres[labels] + torch.randn(700, 16, generator=generator)
    noise = torch.randn(700, 16, generator=generator)
    train = FeatureCache({"easy": features[:600], "noise": noise[:600]}, labels[:600])
    test = FeatureCache({"easy": features[600:], "noise": noise[600:]}, labels[600:])
    torch.manual_seed(0)
    probes = LinearProbes({"easy": 16, "noise": 16}, num_classes=4)
    protocol = ProbeProtocol(epochs=12, batch_size=25, lr=0.05, milestones=(8,))
    history = train_probes(probes, lambda epoch: train.batches(25, generator, drop_last=True), protocol,
                           progress=False)
    scores = evaluate_probes(probes, test.batches(50), progress=False)
    assert scores["easy"]["top1"] >= 99.0
    assert scores["noise"]["top1"] < 50.0  # features unrelated to the labels stay near chance (25%)
    assert [h["lr"] for h in history][7:9] == [0.05, 0.01]


def test_ten_crop_scores_are_the_mean_of_the_crops_scores():
    torch.manual_seed(0)
    trunk = build_encoder("cifar").for_probing()
    plans = plan_layers(trunk, ["conv2", "conv3"], 32, reduce=False)
    extractor = FrozenFeatures(trunk, plans)
    probes = LinearProbes({p.name: p.dims for p in plans}, num_classes=5).eval()
    crops = torch.randn(3, 10, 3, 32, 32)  # 3 images, 10 crops each
    with torch.no_grad():
        flat_scores = probes(extractor(crops.flatten(0, 1)))
        per_crop = [probes(extractor(crops[:, k])) for k in range(10)]
    for name in ("conv2", "conv3"):
        expected = torch.stack([scores[name].softmax(dim=1) for scores in per_crop]).mean(dim=0)
        torch.testing.assert_close(average_crops(flat_scores[name], 10), expected)


def test_evaluation_averages_crops_before_counting():
    # image 0: crop scores disagree; the averaged probabilities favour class 2
    scores = torch.tensor([[5.0, 0.0, 4.9], [0.0, 0.0, 6.0]] + [[0.0, 3.0, 0.0]] * 2)
    labels = torch.tensor([2, 1])
    result = evaluate_probes(_Identity(), [({"p": scores}, labels)], progress=False)
    assert result["p"]["top1"] == 100.0
    assert topk_correct(scores[:2], torch.tensor([2, 2]), ks=(1,))[1] == 1


class _Identity(nn.Module):
    def keys(self):
        return ["p"]

    def forward(self, features):
        return features


def test_the_reducer_pools_only_where_planned():
    trunk = build_encoder("alexnet-small")
    plans = plan_layers(trunk, ["conv1", "conv5"], 224, reduce=True)
    reducer = FeatureReducer(plans)
    out = reducer({"conv1": torch.rand(1, 64, 55, 55), "conv5": torch.rand(1, 256, 13, 13)})
    assert [tuple(v.shape) for v in out.values()] == [(1, plans[0].dims), (1, plans[1].dims)]
    assert plans[0].dims == 64 * 12 * 12 and plans[1].dims == 9216


def test_default_input_range_is_the_one_train_feeds_its_encoders():
    import numpy as np
    from PIL import Image

    from probe.transforms import Normalization, cifar_transform
    from train.augment.views import to_unit_range

    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    ours = cifar_transform(Normalization.choose("auto", {}))(Image.fromarray(pixels))
    theirs = to_unit_range(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0))[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert Normalization.choose("auto", {"normalize": "imagenet"}) == Normalization.named("imagenet")


def test_flip_views_draw_one_view_per_sample_and_cover_both():
    """--cifar-flip: each training row comes whole from one cached view, and both views are used."""
    n = 64
    labels = torch.arange(n) % 10
    plain = FeatureCache({"conv1": torch.zeros(n, 3, dtype=torch.float16)}, labels)
    mirror = FeatureCache({"conv1": torch.ones(n, 3, dtype=torch.float16)}, labels)
    rows = []
    for features, _ in FeatureCache.batches_of_views([plain, mirror], 16, torch.Generator().manual_seed(0)):
        x = features["conv1"]
        assert x.dtype == torch.float32 and bool(((x == 0) | (x == 1)).all())
        assert bool((x.min(1).values == x.max(1).values).all())  # never a mix within a row
        rows.append(x[:, 0])
    picked = torch.cat(rows)
    assert picked.numel() == n and 0 < picked.sum() < n
    # a single view gives exactly the plain shuffled batches (so --no-cifar-flip results did not change)
    one = FeatureCache.batches_of_views([mirror], 16, torch.Generator().manual_seed(3))
    plain_batches = mirror.batches(16, torch.Generator().manual_seed(3))
    for (a, la), (b, lb) in zip(one, plain_batches, strict=True):
        assert torch.equal(a["conv1"], b["conv1"]) and torch.equal(la, lb)


def test_mirror_transform_is_the_flipped_image():
    from PIL import Image

    from probe.transforms import Normalization, cifar_transform

    pixels = (torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()
    norm = Normalization.choose("auto", {})
    plain = cifar_transform(norm)(Image.fromarray(pixels))
    mirrored = cifar_transform(norm, mirror=True)(Image.fromarray(pixels))
    assert torch.equal(mirrored, plain.flip(-1))
