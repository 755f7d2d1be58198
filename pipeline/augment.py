"""Augmentation parameters: a pure function of (configuration, source size, per-sample RNG).

Sampling is separate from rendering so that each parameter's distribution can be tested without pixels, and so that
every sample's provenance (its `.json`) is exactly what was sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import RenderConfig

# The crop must lie inside the hull of pixel centres, so bilinear sampling never reads outside the image.
_EDGE = 0.5
_MAX_TRIES = 10  # as torchvision's RandomResizedCrop; afterwards the last try is shrunk until it fits


@dataclass(frozen=True)
class PaperParams:
    """One patch of the paper's recipe: a crop box in the rotated source, a flip, and colour jitter factors."""

    source: int
    cx: float  # crop centre in source pixel coordinates (continuous; the image spans [0, W] x [0, H])
    cy: float
    w: float  # crop size, measured along the rotated axes
    h: float
    angle: float  # degrees, counter-clockwise; the crop's axes are the source's axes rotated by this angle
    flip: bool
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

    def provenance(self) -> dict:
        return {"source": self.source, "box": _r([self.cx, self.cy, self.w, self.h]), "angle": _r(self.angle),
                "flip": self.flip, "jitter": {"brightness": _r(self.brightness), "contrast": _r(self.contrast),
                                              "saturation": _r(self.saturation), "hue": _r(self.hue)}}

    def corners(self) -> np.ndarray:
        """The crop's four corners in source coordinates (4 x 2), for geometric checks."""
        rot = rotation_matrix(self.angle)
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * [self.w / 2, self.h / 2]
        return local @ rot.T + [self.cx, self.cy]


@dataclass(frozen=True)
class ReleasedParams:
    """One patch of the authors' released generator (docs/architecture.md), step by step."""

    source: int
    crop0: tuple[int, int, int]  # first random crop: x, y, side (half the short side)
    rrc: tuple[int, int, int, int]  # random resized crop inside crop0: x, y, w, h (integers, as torchvision)
    angle: float
    shear: float
    jitter: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue; None: not applied
    jitter_order: tuple[int, ...] = (0, 1, 2, 3)

    def provenance(self) -> dict:
        jit = None
        if self.jitter is not None:
            names = ("brightness", "contrast", "saturation", "hue")
            jit = {n: _r(v) for n, v in zip(names, self.jitter, strict=True)}
            jit["order"] = [names[i] for i in self.jitter_order]
        return {"source": self.source, "crop0": list(self.crop0), "rrc": list(self.rrc), "angle": _r(self.angle),
                "shear": _r(self.shear), "jitter": jit}


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The per-sample random stream: sample i depends on (seed, i) alone, whatever worker renders it."""
    return np.random.Generator(np.random.Philox(key=(seed << 64) | index))


def source_of(index: int, n_sources: int) -> int:
    """Sources take turns, so each is expanded into the same number of patches (within one)."""
    return index % n_sources


def sample_params(cfg: RenderConfig, index: int, sizes: list[tuple[int, int]]) -> PaperParams | ReleasedParams:
    src = source_of(index, len(sizes))
    width, height = sizes[src]
    rng = sample_rng(cfg.seed, index)
    if cfg.recipe == "released":
        return sample_released_params(rng, src, width, height, cfg.size)
    return sample_paper_params(rng, src, width, height, cfg)


def sample_paper_params(rng: np.random.Generator, src: int, width: int, height: int,
                        cfg: RenderConfig) -> PaperParams:
    angle = float(rng.uniform(-cfg.max_angle, cfg.max_angle)) if cfg.rotate else 0.0
    box = sample_crop_box(rng, width, height, angle, cfg) if cfg.scale else _whole_image_box(width, height, angle)
    flip = bool(rng.random() < 0.5) if cfg.flip else False
    if cfg.jitter:
        lo, hi = cfg.jitter_range
        b, c, s = (float(v) for v in rng.uniform(lo, hi, size=3))
        hue = float(rng.uniform(-cfg.hue_range, cfg.hue_range))
    else:
        b, c, s, hue = 1.0, 1.0, 1.0, 0.0
    return PaperParams(src, *box, angle=angle, flip=flip, brightness=b, contrast=c, saturation=s, hue=hue)


def sample_crop_box(rng: np.random.Generator, width: int, height: int, angle: float,
                    cfg: RenderConfig) -> tuple[float, float, float, float]:
    """A crop of area fraction in [min_area, 1] and aspect w/h in `cfg.aspect` that lies inside the source once
    rotated by `angle` (rotation before cropping, no empty border). Returns (cx, cy, w, h)."""
    area = width * height
    log_lo, log_hi = math.log(cfg.aspect[0]), math.log(cfg.aspect[1])
    for _ in range(_MAX_TRIES):
        target = area * rng.uniform(cfg.min_area, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        fit = _fit_factor(width, height, w, h, angle)
        if fit >= 1.0:
            break
    else:
        w, h = w * fit, h * fit  # the largest crop of this aspect and angle that fits
    ex, ey = _half_extents(w, h, angle)
    cx = rng.uniform(_EDGE + ex, width - _EDGE - ex) if width - 2 * _EDGE > 2 * ex else width / 2
    cy = rng.uniform(_EDGE + ey, height - _EDGE - ey) if height - 2 * _EDGE > 2 * ey else height / 2
    return float(cx), float(cy), float(w), float(h)


def _whole_image_box(width: int, height: int, angle: float) -> tuple[float, float, float, float]:
    """No scale augmentation: the whole image, or with rotation the largest centred crop of its aspect."""
    w, h = float(width - 2 * _EDGE), float(height - 2 * _EDGE)
    fit = min(1.0, _fit_factor(width, height, w, h, angle))
    return width / 2, height / 2, w * fit, h * fit


def _half_extents(w: float, h: float, angle: float) -> tuple[float, float]:
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    return (w * c + h * s) / 2, (w * s + h * c) / 2


def _fit_factor(width: int, height: int, w: float, h: float, angle: float) -> float:
    """The factor by which a (w, h) crop rotated by `angle` can grow (>1) or must shrink (<1) to fit."""
    ex, ey = _half_extents(w, h, angle)
    return min((width / 2 - _EDGE) / ex, (height / 2 - _EDGE) / ey)


def sample_released_params(rng: np.random.Generator, src: int, width: int, height: int,
                           size: int) -> ReleasedParams:
    """The authors' released generator: RandomCrop(short/2), RandomResizedCrop(sqrt(2) S, scale (0.002, 1), no
    fallback), RandomAffine(30 deg, shear 30 deg), CenterCrop(S), ColorJitter(.4, .4, .4, .1) with p = 0.5."""
    side = max(1, int(0.5 * min(width, height)))
    x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    while True:  # the released code retries until the crop fits, with no centre-crop fallback
        target = side * side * rng.uniform(0.002, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= side and 0 < h <= side:
            break
    x, y = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
    angle, shear = float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30))
    jitter, order = None, (0, 1, 2, 3)
    if rng.random() < 0.5:
        b, c, s = (float(v) for v in rng.uniform(0.6, 1.4, size=3))
        jitter = (b, c, s, float(rng.uniform(-0.1, 0.1)))
        order = tuple(int(i) for i in rng.permutation(4))
    return ReleasedParams(src, (x0, y0, side), (x, y, w, h), angle, shear, jitter, order)


def rotation_matrix(angle: float) -> np.ndarray:
    """2x2 rotation by `angle` degrees, counter-clockwise as seen on screen (image y axis points down)."""
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s], [-s, c]])


def _r(v):
    if isinstance(v, list):
        return [round(float(x), 6) for x in v]
    return round(float(v), 6)
