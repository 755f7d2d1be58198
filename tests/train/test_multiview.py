"""Multi-view device augmentation (train/augment/multiview.py): determinism, views that differ, each operation against
torchvision's functional reference, and the methods' presets."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from train.augment.multiview import (
    PRESETS,
    ViewSpec,
    colour_jitter,
    dino_views,
    gaussian_blur,
    multiview,
    render_view,
)


def _images(count: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# a view that keeps the image as it is, to switch on one operation at a time
PLAIN = ViewSpec(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_views_are_deterministic_for_a_seed_and_differ_between_views_and_seeds(preset):
    images = _images()
    specs = PRESETS[preset](32)
    first = multiview(images, specs, torch.Generator().manual_seed(3))
    again = multiview(images, specs, torch.Generator().manual_seed(3))
    other = multiview(images, specs, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])
    assert all(v.min() >= -1 and v.max() <= 1 and v.dtype == torch.float32 for v in first)


def test_the_plain_view_is_the_image_and_solarisation_inverts_the_bright_half():
    images = _images()
    unit = images.float() / 255
    torch.testing.assert_close(render_view(unit, PLAIN, torch.Generator().manual_seed(0)), unit)
    solarised = render_view(unit, ViewSpec(**{**PLAIN.__dict__, "solarize_p": 1.0}), torch.Generator())
    torch.testing.assert_close(solarised, torch.where(unit >= 0.5, 1 - unit, unit))
    grey = render_view(unit, ViewSpec(**{**PLAIN.__dict__, "grey_p": 1.0}), torch.Generator())
    torch.testing.assert_close(grey, TF.rgb_to_grayscale(unit, num_output_channels=3), atol=1e-6, rtol=0)


def test_colour_jitter_equals_torchvisions_functional_ops_per_sample():
    unit = _images(4).float() / 255
    b, c, s, h = (torch.tensor(v) for v in ([0.7, 1.3, 1.0, 0.9], [1.2, 0.6, 1.4, 1.0], [0.5, 1.5, 1.0, 0.0],
                                             [0.05, -0.1, 0.0, 0.02]))
    ours = colour_jitter(unit, b, c, s, h)
    for i in range(4):
        expected = TF.adjust_brightness(unit[i], b[i].item())
        expected = TF.adjust_contrast(expected, c[i].item())
        expected = TF.adjust_saturation(expected, s[i].item())
        expected = TF.adjust_hue(expected, h[i].item())
        torch.testing.assert_close(ours[i], expected, atol=1e-5, rtol=0)


def test_gaussian_blur_uses_each_samples_sigma_as_torchvision():
    unit = _images(3).float() / 255
    sigma = torch.tensor([0.3, 1.0, 2.0])
    ours = gaussian_blur(unit, sigma, 5)
    for i in range(3):
        torch.testing.assert_close(ours[i], TF.gaussian_blur(unit[i], [5, 5], [sigma[i].item()] * 2),
                                   atol=1e-5, rtol=0)


def test_each_step_applies_with_its_probability_per_sample():
    images = _images(400, 16)
    spec = ViewSpec(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.3)
    view = multiview(images, [spec], torch.Generator().manual_seed(0))[0]
    grey_share = (view.std(dim=1).amax(dim=(1, 2)) < 1e-6).float().mean().item()
    assert 0.22 < grey_share < 0.38
    flipped = multiview(images, [ViewSpec(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, grey_p=0.0)],
                        torch.Generator().manual_seed(0))[0]
    unit = images.float() / 255 * 2 - 1
    mirrored = torch.isclose(flipped, unit.flip(-1), atol=1e-5).flatten(1).all(dim=1)
    assert 0.4 < mirrored.float().mean().item() < 0.6


def test_dino_multicrop_has_two_global_and_n_local_views():
    specs = dino_views(224, local_crops=4)
    assert [s.size for s in specs] == [224, 224, 96, 96, 96, 96]
    assert specs[0].blur_p == 1.0 and specs[1].blur_p == 0.1 and specs[1].solarize_p == 0.2
    assert specs[2].scale == (0.05, 0.4) and specs[0].scale == (0.4, 1.0)
    views = multiview(_images(2, 64), dino_views(32, local_crops=2), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(2, 3, 32, 32)] * 2 + [(2, 3, 14, 14)] * 2
    with pytest.raises(ValueError, match="RGB batch"):
        multiview(torch.zeros(2, 1, 8, 8), specs, torch.Generator())
