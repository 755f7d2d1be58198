"""Rendering one patch from its parameters in O(S^2): one warp from a precomputed pyramid, one colour transform.

The whole source is never rotated or copied per patch. A crop that covers many source pixels per output pixel is
sampled from the pyramid level that brings the remaining downscale below 2, so that bilinear sampling does not
alias (the level's Gaussian pre-filter does the antialiasing a resize would do).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.augment import PaperParams, ReleasedParams, rotation_matrix

# ITU-R 601 luma, as torchvision's rgb_to_grayscale uses for contrast and saturation.
_LUMA = np.array([0.299, 0.587, 0.114])
_PAD = 2  # replicated border around each level: sampling that grazes an edge reads the edge's own colour

# Rendering is parallel across processes. OpenCV's own thread pool would only contend with them, and a pool that
# has run threads before a fork can deadlock the forked workers, so it is switched off for any process that renders.
cv2.setNumThreads(1)


class SourcePyramid:
    """Gaussian pyramid of one RGB source: level k is the source downscaled by 2**k (cv2.pyrDown)."""

    def __init__(self, rgb: np.ndarray, min_side: int = 8):
        self.width, self.height = rgb.shape[1], rgb.shape[0]
        levels = [rgb]
        while min(levels[-1].shape[:2]) >= 2 * min_side:
            levels.append(cv2.pyrDown(levels[-1]))
        self.levels = [cv2.copyMakeBorder(lv, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REPLICATE) for lv in levels]

    def level_for(self, downscale: float) -> int:
        """The level whose remaining downscale factor lies in [1, 2)."""
        if downscale < 2.0:
            return 0
        return min(int(math.floor(math.log2(downscale))), len(self.levels) - 1)

    def warp(self, src_from_dst: np.ndarray, size: int, downscale: float, interpolation: int = cv2.INTER_LINEAR,
             border: int = cv2.BORDER_REPLICATE, border_value=(0, 0, 0)) -> np.ndarray:
        """Sample an S x S patch; `src_from_dst` (2x3) maps output pixel centres to level-0 pixel centres."""
        k = self.level_for(downscale)
        m = src_from_dst / (2.0**k)  # pyrDown keeps level-0 pixel 2**k * j as level-k pixel j
        m[:, 2] += _PAD
        return cv2.warpAffine(self.levels[k], m, (size, size), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=border, borderValue=border_value)


def paper_affine(p: PaperParams, size: int) -> np.ndarray:
    """2x3 map from output pixel indices to source pixel indices for the paper recipe."""
    sx, sy = p.w / size, p.h / size
    # output index u -> crop-local coordinate (u + 0.5) * sx - w/2, mirrored when flipped
    local = np.array([[-sx if p.flip else sx, 0.0], [0.0, sy]])
    offset = np.array([(-1 if p.flip else 1) * (0.5 * sx - p.w / 2), 0.5 * sy - p.h / 2])
    rot = rotation_matrix(p.angle)
    lin = rot @ local
    trans = rot @ offset + [p.cx - 0.5, p.cy - 0.5]  # continuous -> pixel-centre indices
    return np.hstack([lin, trans[:, None]])


def render_paper_patch(pyr: SourcePyramid, p: PaperParams, size: int, **warp_kw) -> np.ndarray:
    """An S x S x 3 uint8 patch in RGB order."""
    patch = pyr.warp(paper_affine(p, size), size, math.sqrt(p.w * p.h) / size, **warp_kw)
    if (p.brightness, p.contrast, p.saturation, p.hue) != (1.0, 1.0, 1.0, 0.0):
        patch = apply_linear_jitter(patch, p.brightness, p.contrast, p.saturation, p.hue)
    return patch


def jitter_matrix(brightness: float, contrast: float, saturation: float, hue: float,
                  mean_luma: float) -> np.ndarray:
    """The 3x4 affine map in RGB of brightness, contrast, saturation, then hue (a rotation about the grey axis).

    Each step is linear in RGB, as section 3.1 says, so the four compose into one matrix and one pass over the
    pixels. Contrast blends towards the mean luma of the image it receives (brightness scales that mean).
    """
    eye = np.eye(3)
    sat = saturation * eye + (1 - saturation) * np.outer(np.ones(3), _LUMA)
    theta = 2 * math.pi * hue
    u = np.ones(3) / math.sqrt(3)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rot = math.cos(theta) * eye + math.sin(theta) * cross + (1 - math.cos(theta)) * np.outer(u, u)
    lin = contrast * brightness * rot @ sat
    # rot and sat both leave grey (1, 1, 1) fixed, so the contrast offset passes through them unchanged
    off = np.full(3, (1 - contrast) * brightness * mean_luma)
    return np.hstack([lin, off[:, None]])


def apply_linear_jitter(patch: np.ndarray, brightness: float, contrast: float, saturation: float,
                        hue: float) -> np.ndarray:
    mean_rgb = cv2.mean(patch)[:3]
    m = jitter_matrix(brightness, contrast, saturation, hue, float(np.dot(_LUMA, mean_rgb)))
    return cv2.transform(patch, m)  # saturates to [0, 255] and rounds


def render_released_patch(pyr: SourcePyramid, p: ReleasedParams, size: int) -> np.ndarray:
    """The released generator's steps, composed into two warps: crop + resize to T = int(sqrt(2) S) (bicubic),
    then the affine about T's centre and the centre crop to S (bilinear, black fill), then the colour jitter."""
    big = int(math.sqrt(2) * size)
    x0, y0, _ = p.crop0
    x, y, w, h = p.rrc
    sx, sy = w / big, h / big
    resize = np.array([[sx, 0, x0 + x + 0.5 * sx - 0.5], [0, sy, y0 + y + 0.5 * sy - 0.5]])
    resized = pyr.warp(resize, big, math.sqrt(sx * sy), interpolation=cv2.INTER_CUBIC)
    shear = math.tan(math.radians(p.shear))
    fwd = rotation_matrix(p.angle) @ np.array([[1.0, -shear], [0.0, 1.0]])
    inv = np.linalg.inv(fwd)
    centre = np.array([big / 2 - 0.5, big / 2 - 0.5])
    off = (big - size) // 2 if (big - size) % 2 == 0 else int(round((big - size) / 2.0))
    # output index u -> T index u + off -> pre-affine index centre + inv (u + off - centre)
    trans = centre + inv @ (np.array([off, off]) - centre)
    m = np.hstack([inv, trans[:, None]])
    patch = cv2.warpAffine(resized, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if p.jitter is not None:
        patch = _torchvision_style_jitter(patch, p.jitter, p.jitter_order)
    return patch


def _torchvision_style_jitter(patch: np.ndarray, factors: tuple[float, float, float, float],
                              order: tuple[int, ...]) -> np.ndarray:
    """ColorJitter as torchvision applies it to PIL images: the four ops in a random order, each rounding to
    uint8, hue as a shift of H in HSV."""
    b, c, s, hue = factors
    img = patch
    for op in order:
        if op == 0:
            img = _blend(img, np.zeros_like(img, dtype=np.float32), b)
        elif op == 1:
            img = _blend(img, np.float32(np.dot(_LUMA, cv2.mean(img)[:3])), c)
        elif op == 2:
            grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            img = _blend(img, grey.astype(np.float32), s)
        else:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(hue * 255))) % 256
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return img


def _blend(img: np.ndarray, other, factor: float) -> np.ndarray:
    out = factor * img.astype(np.float32) + (1 - factor) * other
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render(pyramids: list[SourcePyramid], p: PaperParams | ReleasedParams, size: int) -> np.ndarray:
    if isinstance(p, ReleasedParams):
        return render_released_patch(pyramids[p.source], p, size)
    return render_paper_patch(pyramids[p.source], p, size)


def encode(patch_rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(patch_rgb, cv2.COLOR_RGB2BGR)
    if fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError(f"cannot encode a {patch_rgb.shape} patch as {fmt}")
    return buf.tobytes()
