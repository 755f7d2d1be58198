"""The augmentation's parameters stay in their ranges, and crops never leave the rotated source."""

import numpy as np
import pytest

from pipeline.augment import sample_params
from pipeline.config import RenderConfig

W, H = 600, 400
N = 4000


@pytest.fixture(scope="module")
def params():
    cfg = RenderConfig(size=64)
    return [sample_params(cfg, i, [(W, H)]) for i in range(N)]


def test_crop_area_and_aspect_in_range(params):
    area = np.array([p.w * p.h / (W * H) for p in params])
    aspect = np.array([p.w / p.h for p in params])
    assert area.min() >= 1e-3 and area.max() <= 1.0
    assert aspect.min() >= 3 / 4 - 1e-9 and aspect.max() <= 4 / 3 + 1e-9
    # the whole range is used: small crops and crops of more than a third of the image
    assert (area < 0.01).mean() > 0.005 and (area > 0.3).mean() > 0.05


def test_angle_flip_and_jitter_ranges(params):
    angle = np.array([p.angle for p in params])
    assert angle.min() > -35 and angle.max() < 35 and angle.min() < -30 and angle.max() > 30
    flips = np.mean([p.flip for p in params])
    assert abs(flips - 0.5) < 0.03  # 4000 fair coins: 3 sigma is 0.024
    for name in ("brightness", "contrast", "saturation"):
        v = np.array([getattr(p, name) for p in params])
        assert v.min() > 0.6 and v.max() < 1.4 and v.min() < 0.62 and v.max() > 1.38
    hue = np.array([p.hue for p in params])
    assert hue.min() > -0.1 and hue.max() < 0.1


def test_rotated_crop_lies_inside_source(params):
    for p in params:
        c = p.corners()
        assert c[:, 0].min() >= 0.5 - 1e-6 and c[:, 0].max() <= W - 0.5 + 1e-6
        assert c[:, 1].min() >= 0.5 - 1e-6 and c[:, 1].max() <= H - 0.5 + 1e-6


def test_families_switch_off():
    cfg = RenderConfig(size=64, scale=False, rotate=False, jitter=False, flip=False)
    p = sample_params(cfg, 7, [(W, H)])
    assert (p.angle, p.flip, p.brightness, p.contrast, p.saturation, p.hue) == (0.0, False, 1.0, 1.0, 1.0, 0.0)
    assert (p.cx, p.cy) == (W / 2, H / 2) and (p.w, p.h) == (W - 1, H - 1)


def test_sample_is_a_function_of_seed_and_index():
    cfg = RenderConfig(size=64)
    assert sample_params(cfg, 123, [(W, H)]) == sample_params(cfg, 123, [(W, H)])
    assert sample_params(cfg, 123, [(W, H)]) != sample_params(cfg, 124, [(W, H)])
    other = RenderConfig(size=64, seed=1)
    assert sample_params(cfg, 123, [(W, H)]) != sample_params(other, 123, [(W, H)])


def test_sources_take_turns():
    cfg = RenderConfig(size=64)
    sizes = [(W, H), (300, 200), (500, 500)]
    assert [sample_params(cfg, i, sizes).source for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_released_recipe_ranges():
    cfg = RenderConfig(size=64, recipe="released")
    ps = [sample_params(cfg, i, [(W, H)]) for i in range(2000)]
    side = int(0.5 * min(W, H))
    for p in ps:
        x0, y0, s = p.crop0
        assert s == side and 0 <= x0 <= W - s and 0 <= y0 <= H - s
        x, y, w, h = p.rrc
        assert 0 < w <= s and 0 < h <= s and x + w <= s and y + h <= s
        assert -30 <= p.angle <= 30 and -30 <= p.shear <= 30
    applied = np.mean([p.jitter is not None for p in ps])
    assert abs(applied - 0.5) < 0.05
