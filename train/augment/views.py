"""Views of a batch for the methods: batched, device-side versions of their native augmentations (crops, flips,
rescaling, rotations).

The rendered patches arrive as uint8 (B, C, S, S) batches; cropping, flipping and rescaling happen here, on
the training device, as one ``affine_grid`` + ``grid_sample`` per batch. Doing it per sample in loader
workers (PIL / torchvision) would cap throughput at a few thousand images/s per CPU core, far under what one
GPU trains at.

Random parameters come from an explicit CPU ``torch.Generator`` (checkpointed by the loop) so a resumed run
draws exactly the same crops, whatever the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def to_unit_range(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 [0, 255] -> float (-1, 1), the input range of every method (paper, section 3.1)."""
    return x.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def _affine_sample(
    x: Tensor, size: int, cx: Tensor, cy: Tensor, w: Tensor, h: Tensor, flip: Tensor
) -> Tensor:
    """Bilinear crop of boxes given in normalised coordinates (centres cx, cy and sizes w, h, all in [-1, 1]
    units, i.e. a full image is w = h = 2) resized to ``size``, optionally mirrored.

    Always computed in float32 (float64 input stays float64), also inside an autocast region: ``affine_grid``'s
    matrix product would otherwise return a bf16 grid whose coordinates, at 256 px, are off by up to half a pixel.
    On CUDA the grid is built in float64 and rounded, since TF32 (on in training) would round its fp32 product to
    10 mantissa bits.
    """
    b = x.shape[0]
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    grid_dtype = torch.float64 if x.is_cuda else dtype
    theta = torch.zeros(b, 2, 3, dtype=torch.float32)
    sx = w / 2
    theta[:, 0, 0] = torch.where(flip, -sx, sx)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h / 2
    theta[:, 1, 2] = cy
    # non_blocking: from pageable memory the copy is staged at once, without waiting for the GPU's queued work
    theta = theta.to(device=x.device, dtype=grid_dtype, non_blocking=True)
    with torch.autocast(x.device.type, enabled=False):
        grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False).to(dtype)
        return F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision's RandomResizedCrop (+ horizontal flip), per sample, on a whole batch at once.

    Area fraction uniform in ``scale``, log-aspect uniform in ``ratio``; boxes that do not fit are clipped
    to the image (torchvision retries then falls back to a centre crop; clipping keeps this loop-free and
    differs only for the few draws near the limits).
    """
    b, _, hgt, wid = x.shape
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=generator)
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(logr)
    # widths / heights as fractions of the image side (square-pixel aspect relative to the image)
    aspect = wid / hgt
    fw = torch.sqrt(area * r / aspect).clamp(max=1.0)
    fh = torch.sqrt(area / r * aspect).clamp(max=1.0)
    ox = torch.rand(b, generator=generator) * (1 - fw)
    oy = torch.rand(b, generator=generator) * (1 - fh)
    flip = torch.rand(b, generator=generator) < flip_p
    cx = (ox + fw / 2) * 2 - 1
    cy = (oy + fh / 2) * 2 - 1
    return _affine_sample(x, size, cx, cy, fw * 2, fh * 2, flip)


def random_crop(
    x: Tensor, size: int, flip_p: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Non-scaled random ``size`` crop (+ horizontal flip), RotNet's native augmentation.

    Offsets are whole pixels, so bilinear sampling lands on pixel centres and copies pixels exactly. An input
    smaller than ``size`` is first resized up (so 32 px renders still feed a 224 px network).
    """
    b, _, hgt, wid = x.shape
    if hgt < size or wid < size:
        x = resize(x, max(size, hgt), max(size, wid))
        b, _, hgt, wid = x.shape
    ox = torch.randint(0, wid - size + 1, (b,), generator=generator).float()
    oy = torch.randint(0, hgt - size + 1, (b,), generator=generator).float()
    flip = torch.rand(b, generator=generator) < flip_p
    fw, fh = size / wid, size / hgt
    cx = (ox / wid + fw / 2) * 2 - 1
    cy = (oy / hgt + fh / 2) * 2 - 1
    return _affine_sample(x, size, cx, cy, torch.full((b,), 2 * fw), torch.full((b,), 2 * fh), flip)


def padded_random_crop(
    x: Tensor, size: int, pad: int = 4, flip_p: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """CIFAR's standard augmentation: zero-pad by ``pad``, random ``size`` crop, horizontal flip."""
    x = resize(x, size, size) if x.shape[-1] != size or x.shape[-2] != size else x
    x = F.pad(x if x.is_floating_point() else x.float(), (pad, pad, pad, pad))
    return random_crop(x, size, flip_p=flip_p, generator=generator)


def center_crop_resize(x: Tensor, size: int, crop_fraction: float = 224 / 256) -> Tensor:
    """Deterministic evaluation view: the central ``crop_fraction`` of the image, resized to ``size``."""
    b = x.shape[0]
    zeros = torch.zeros(b)
    full = torch.full((b,), 2 * crop_fraction)
    return _affine_sample(x, size, zeros, zeros, full, full, torch.zeros(b, dtype=torch.bool))


def resize(x: Tensor, height: int, width: int | None = None) -> Tensor:
    """Bilinear resize (antialiased when shrinking) of a batch; uint8 input becomes float."""
    width = height if width is None else width
    src = x if x.is_floating_point() else x.float()
    if src.shape[-2:] == (height, width):
        return src
    shrink = height < src.shape[-2] or width < src.shape[-1]
    return F.interpolate(src, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def rotate_batch(x: Tensor) -> tuple[Tensor, Tensor]:
    """RotNet's batch: every image at 0, 90, 180 and 270 degrees (4B images) and the rotation labels 0..3.

    Grouped by rotation (all 0-degree copies first), as in the RotNet reference code.
    """
    views = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return torch.cat(views), labels
