"""Multi-view augmentation for the modern methods, batched on the device (SimCLR, MoCo v2, BYOL, DINO).

Each view of a batch is: random-resized crop + horizontal flip, colour jitter (brightness, contrast, saturation,
hue, in that order, each factor drawn per sample) with probability ``jitter_p``, greyscale with ``grey_p``,
Gaussian blur (sigma uniform in [0.1, 2]) with ``blur_p``, solarisation (pixels >= 0.5 inverted) with
``solarize_p``. The probabilities are per sample, as torchvision's ``RandomApply`` in the methods' reference code,
and each method's recipe is a preset below, with its reference.

Every random number is drawn from one CPU ``torch.Generator`` (the loop checkpoints it), in a fixed order: the
views are deterministic for a seed, differ between views (successive draws), and a resumed run draws the same
ones whatever the device. The operations themselves are batched tensor ops on the images' device: crops through
:func:`train.augment.views._affine_sample` (one ``grid_sample``), jitter and greyscale as per-sample affine maps,
hue by the closed form of an HSV rotation (:func:`shift_hue`), blur as one grouped separable convolution with a
kernel per sample. bench/multiview.py measures this against kornia.augmentation and torchvision's tensor transforms
(bench/results/multiview.md).

Input: a uint8 batch (B, 3, H, W) (or float in [0, 255]); output: float views in (-1, 1), the range every method
feeds its encoder (:func:`train.augment.views.to_unit_range`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from train.augment.views import _affine_sample

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma with torchvision's rounding (rgb_to_grayscale)


@dataclass(frozen=True)
class ViewSpec:
    """One view's recipe. ``jitter`` is (brightness, contrast, saturation, hue) strengths as in torchvision's
    ``ColorJitter``: factors uniform in [1 - s, 1 + s], hue shift uniform in [-h, h] of a full turn."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grey_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0


def _blur_kernel_size(size: int) -> int:
    """10% of the view's side, odd (SimCLR's appendix A: 23 px at 224); at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def simclr_jitter_strength(size: int) -> float:
    """SimCLR's colour-jitter strength s for inputs of ``size`` px: 1.0 on ImageNet (appendix A), 0.5 on CIFAR-10,
    the authors' own CIFAR-10 command (google-research/simclr, README: ``--color_jitter_strength=0.5
    --use_blur=False``); 0.5 below 64 px, as the blur's switch."""
    return 0.5 if size < 64 else 1.0


def simclr_views(size: int, blur: bool | None = None, strength: float | None = None) -> list[ViewSpec]:
    """SimCLR (Chen et al., 2020, appendix A): crop (0.08, 1), jitter (0.8 s, 0.8 s, 0.8 s, 0.2 s) with p = 0.8,
    greyscale 0.2, blur 0.5 on ImageNet; on CIFAR no blur and s = 0.5 (:func:`simclr_jitter_strength`), the
    defaults below 64 px."""
    blur = size >= 64 if blur is None else blur
    s = simclr_jitter_strength(size) if strength is None else strength
    view = ViewSpec(size, jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), blur_p=0.5 if blur else 0.0)
    return [view, view]


def mocov2_views(size: int, blur: bool | None = None) -> list[ViewSpec]:
    """MoCo v2 (Chen et al., 2020, "Improved baselines", its main_moco.py --aug-plus): crop (0.2, 1), jitter
    (0.4, 0.4, 0.4, 0.1) with p = 0.8, greyscale 0.2, blur 0.5 (not below 64 px unless asked)."""
    blur = size >= 64 if blur is None else blur
    view = ViewSpec(size, scale=(0.2, 1.0), blur_p=0.5 if blur else 0.0)
    return [view, view]


def byol_views(size: int, blur: bool | None = None) -> list[ViewSpec]:
    """BYOL (Grill et al., 2020, table 6): asymmetric; jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, greyscale 0.2 in
    both, blur 1.0 / 0.1 and solarisation 0.0 / 0.2 (blur off below 64 px unless asked, as on CIFAR)."""
    blur = size >= 64 if blur is None else blur
    common = ViewSpec(size, jitter=(0.4, 0.4, 0.2, 0.1))
    return [replace(common, blur_p=1.0 if blur else 0.0),
            replace(common, blur_p=0.1 if blur else 0.0, solarize_p=0.2)]


def dino_views(size: int, local_crops: int = 6, local_size: int | None = None,
               blur: bool | None = None) -> list[ViewSpec]:
    """DINO's multi-crop (Caron et al., 2021, main_dino.py DataAugmentationDINO): 2 global crops, scale
    (0.4, 1), and ``local_crops`` local ones, scale (0.05, 0.4), at ``local_size`` (96 for 224: 3/7 of the global
    size by default); jitter (0.4, 0.4, 0.2, 0.1) p = 0.8, greyscale 0.2; blur 1.0 / 0.1 / 0.5 (global 1, global
    2, locals) and solarisation 0.2 on global 2 only."""
    blur = size >= 64 if blur is None else blur
    local_size = local_size or max(8, round(size * 96 / 224))
    common = ViewSpec(size, scale=(0.4, 1.0), jitter=(0.4, 0.4, 0.2, 0.1))
    first = replace(common, blur_p=1.0 if blur else 0.0)
    second = replace(common, blur_p=0.1 if blur else 0.0, solarize_p=0.2)
    local = replace(common, size=local_size, scale=(0.05, 0.4), blur_p=0.5 if blur else 0.0)
    return [first, second] + [local] * local_crops


PRESETS = {"simclr": simclr_views, "mocov2": mocov2_views, "byol": byol_views, "dino": dino_views}


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.empty(count).uniform_(low, high, generator=generator)


def _crop_boxes(count: int, height: int, width: int, spec: ViewSpec,
                generator: torch.Generator) -> tuple[Tensor, ...]:
    """Random-resized-crop boxes as (cx, cy, w, h, flip) in normalised units (a whole image is w = h = 2);
    area fraction uniform in ``spec.scale``, log-aspect uniform in ``spec.ratio``, clipped to the image (as
    :func:`train.augment.views.random_resized_crop`)."""
    area = _uniform(count, *spec.scale, generator)
    aspect = torch.exp(_uniform(count, math.log(spec.ratio[0]), math.log(spec.ratio[1]), generator))
    fw = torch.sqrt(area * aspect * height / width).clamp(max=1.0)
    fh = torch.sqrt(area / aspect * width / height).clamp(max=1.0)
    ox = torch.rand(count, generator=generator) * (1 - fw)
    oy = torch.rand(count, generator=generator) * (1 - fh)
    flip = torch.rand(count, generator=generator) < spec.flip_p
    return (ox + fw / 2) * 2 - 1, (oy + fh / 2) * 2 - 1, fw * 2, fh * 2, flip


def _grey(x: Tensor) -> Tensor:
    weights = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.to(device=like.device, dtype=like.dtype, non_blocking=True).reshape(-1, 1, 1, 1)


def colour_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor) -> Tensor:
    """torchvision's ColorJitter in a fixed order (brightness, contrast, saturation, hue) with per-sample factors
    on [0, 1] images, clamped after each step as torchvision does; ``hue`` in turns ([-0.5, 0.5])."""
    x = (x * _per_sample(brightness, x)).clamp(0, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * _per_sample(contrast, x) + mean).clamp(0, 1)
    grey = _grey(x)
    x = ((x - grey) * _per_sample(saturation, x) + grey).clamp(0, 1)
    return shift_hue(x, hue)


def shift_hue(x: Tensor, hue: Tensor) -> Tensor:
    """torchvision's ``adjust_hue`` (HSV hue rotated by ``hue`` turns, per sample) without building an HSV image:
    a hue rotation keeps each pixel's max and min, so the result is ``max - (max - min) * clamp(min(k, 4 - k),
    0, 1)`` with ``k = (n + 6 h') mod 6``, n = 5, 3, 1 for R, G, B (the closed form of HSV -> RGB)."""
    r, g, b = x.unbind(dim=1)
    top, bottom = x.amax(dim=1), x.amin(dim=1)
    spread = top - bottom
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    sector = torch.where(top == r, (g - b) / safe, torch.where(top == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    sector = (sector + 6 * _per_sample(hue, x)[:, 0]).remainder(6)  # the hue in sixths of a turn, [0, 6)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    k = (n + sector[:, None]).remainder(6)
    return top[:, None] - spread[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """A separable Gaussian blur with one ``sigma`` per sample, as one grouped convolution (reflect padding)."""
    b, c, h, w = x.shape
    offsets = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    kernels = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype, non_blocking=True)
    kernels = kernels.repeat_interleave(c, dim=0)  # (B * C, k): each channel of sample i uses sigma i
    pad = kernel_size // 2
    flat = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=b * c)
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=b * c)
    return flat.reshape(b, c, h, w)


def _apply_where(x: Tensor, chosen: Tensor, op) -> Tensor:
    """``op`` applied to the samples where ``chosen`` (a CPU bool mask) holds; the others unchanged."""
    # the mask and the index are CPU tensors drawn from the CPU generator: no device synchronisation here, and the
    # copy to the device need not wait (the multi-view methods' steps never wait for the device)
    index = torch.arange(len(chosen))[chosen]
    if index.numel() == 0:
        return x
    x = x.clone()
    on_device = index.to(x.device, non_blocking=True)
    x[on_device] = op(x[on_device], index)
    return x


def render_view(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """One view of a (B, 3, H, W) batch in [0, 1] (float) per ``spec``, in [0, 1]. Draws every random number
    for every sample from ``generator`` whether or not the sample's step applies (a fixed number of draws per
    view), so the stream's position depends only on the batch size and the recipe."""
    b, _, height, width = images.shape
    cx, cy, bw, bh, flip = _crop_boxes(b, height, width, spec, generator)
    x = _affine_sample(images, spec.size, cx, cy, bw, bh, flip).clamp(0, 1)
    jitter_on = torch.rand(b, generator=generator) < spec.jitter_p
    s_b, s_c, s_s, s_h = spec.jitter
    factors = [_uniform(b, max(0.0, 1 - s), 1 + s, generator) for s in (s_b, s_c, s_s)]
    hue = _uniform(b, -s_h, s_h, generator)
    grey_on = torch.rand(b, generator=generator) < spec.grey_p
    blur_on = torch.rand(b, generator=generator) < spec.blur_p
    sigma = _uniform(b, 0.1, 2.0, generator)
    solarize_on = torch.rand(b, generator=generator) < spec.solarize_p
    x = _apply_where(x, jitter_on, lambda v, i: colour_jitter(v, *(f[i] for f in factors), hue[i]))
    x = _apply_where(x, grey_on, lambda v, i: _grey(v).expand_as(v))
    kernel = _blur_kernel_size(spec.size)
    x = _apply_where(x, blur_on, lambda v, i: gaussian_blur(v, sigma[i], kernel))
    return _apply_where(x, solarize_on, lambda v, i: torch.where(v >= 0.5, 1 - v, v))


def multiview(images: Tensor, specs: Sequence[ViewSpec], generator: torch.Generator) -> list[Tensor]:
    """The views of a uint8 (or [0, 255] float) batch, one per spec, in (-1, 1), on the images' device."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"multiview takes an RGB batch (B, 3, H, W), got {tuple(images.shape)}")
    unit = images.float() / 255.0
    return [render_view(unit, spec, generator) * 2 - 1 for spec in specs]
