"""The learning-free baselines: the scattering encoders (against kymatio itself) and the k-means initialisation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kymatio
import pytest
import torch

from train.models import build_encoder, output_shape
from train.models.contract import tap_shapes
from train.models.encoder_io import load_encoder, save_encoder
from train.models.kmeans_init import data_dependent_init, pre_activation_stats

ROOT = Path(__file__).resolve().parents[2]


def test_scattering_equals_kymatios_own_transform_on_a_fixed_image():
    encoder = build_encoder("scattering-cifar").eval()
    ramp = torch.linspace(-1, 1, 32)
    image = torch.stack([ramp[:, None] * ramp[None, :], torch.sin(6 * ramp)[:, None].expand(32, 32),
                         torch.rand(32, 32, generator=torch.Generator().manual_seed(0))])[None]
    reference = kymatio.Scattering2D(J=2, shape=(32, 32), L=8, max_order=2, frontend="torch")(image)
    assert reference.shape == (1, 3, 81, 8, 8)
    taps = encoder.forward_taps(image)
    torch.testing.assert_close(taps["conv2"], reference.reshape(1, 243, 8, 8), rtol=0, atol=0)
    # conv1: orders 0 and 1 (1 + J L = 17 coefficients) of each colour channel
    torch.testing.assert_close(taps["conv1"], reference[:, :, :17].reshape(1, 51, 8, 8), rtol=0, atol=0)
    assert encoder.first_layer_weight() is None and not list(encoder.parameters())
    assert encoder.state_dict() == {}  # the filters are rebuilt, not stored in encoder.pt


def test_scattering_shapes_at_imagenet_size_are_the_documented_ones():
    encoder = build_encoder("scattering")
    assert encoder.input_size == 224
    assert tap_shapes(encoder, ["conv1", "conv2"]) == {"conv1": (51, 56, 56), "conv2": (243, 56, 56)}
    hybrid = build_encoder("scattering-alexnet")
    assert hybrid.taps == ("conv2", "conv3", "conv4", "conv5")
    assert output_shape(hybrid) == (256, 6, 6)  # AlexNet's, so its fc6-fc8 head fits
    assert not list(hybrid.tap_module("conv2").parameters())


def test_scattering_module_imports_in_a_fresh_interpreter_without_kymatio_torch():
    code = ("import sys; from train.models import build_encoder; e = build_encoder('scattering-cifar'); "
            "assert 'kymatio.torch' not in sys.modules; print(e.taps)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "('conv1', 'conv2')" in done.stdout


def _images(count: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _initialised(seed: int, **kw) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(seed)
    encoder = build_encoder("cifar")
    return encoder, data_dependent_init(encoder, _images(), seed=seed, between_layer_iterations=3, **kw)


def test_kmeans_init_is_deterministic_and_has_the_documented_scales(tmp_path):
    first, provenance = _initialised(0)
    second, _ = _initialised(0)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    other, _ = _initialised(1)
    assert not torch.equal(other.conv1.conv.weight, first.conv1.conv.weight)
    # each layer's pre-activation: mean 0, standard deviation = its recorded between-layer scale, per channel
    stats = pre_activation_stats(first.eval(), _images())
    for name, (mean, std) in stats.items():
        scale = provenance.between_layer_scales[name]
        assert mean.abs().max() < 1e-4 * scale, name
        torch.testing.assert_close(std, torch.full_like(std, scale), rtol=1e-3, atol=0)
    assert provenance.patches["conv1"] == 48 * 10 * 10  # every conv1 position of every image
    assert len(set(provenance.between_layer_scales.values())) > 1  # the layers were rescaled
    # saved as a normal encoder.pt with its provenance, and it loads
    save_encoder(tmp_path / "encoder.pt", first, "cifar", {"method": "kmeans-init", "init": provenance.to_dict()})
    loaded, info = load_encoder(tmp_path / "encoder.pt")
    assert info["config"]["init"]["seed"] == 0 and info["config"]["init"]["filters"] == "kmeans"
    torch.testing.assert_close(loaded.conv4.conv.weight, first.conv4.conv.weight, rtol=0, atol=0)


def test_kmeans_filters_are_centroids_of_whitened_patches_and_random_keeps_its_directions():
    kmeans_net, _ = _initialised(0)
    rescaled, provenance = _initialised(0, filters="random")
    torch.manual_seed(0)
    plain = build_encoder("cifar")
    # random + rescaling only: each filter keeps its direction (its scale is all that changes)
    cosine = torch.nn.functional.cosine_similarity(rescaled.conv2.conv.weight.flatten(1),
                                                   plain.conv2.conv.weight.flatten(1))
    torch.testing.assert_close(cosine, torch.ones_like(cosine))
    assert provenance.patches == {}
    assert not torch.allclose(kmeans_net.conv1.conv.weight, rescaled.conv1.conv.weight)


def test_kmeans_init_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="convolutional encoders"):
        data_dependent_init(build_encoder("scattering-cifar"), _images(4))
    with pytest.raises(ValueError, match="use more images"):  # conv3: 384 filters, 9 positions per image
        data_dependent_init(build_encoder("cifar"), _images(8), between_layer_iterations=0)
