"""`probe filters`: the first layer's filters as a picture (the paper's Figure 2)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from pipeline.fileio import atomic_write_bytes


def normalized_filters(weight: Tensor) -> Tensor:
    """Each filter scaled into (-1, 1) by its own largest magnitude, as in the paper's Figure 2."""
    peak = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return weight / peak


def filter_grid(weight: Tensor, columns: int | None = None, scale: int = 4, border: int = 1) -> np.ndarray:
    """An RGB uint8 picture of (out, in, k, k) filters: one tile per filter, mid-grey for zero.

    Three-channel filters are shown in colour; others (a Sobel front end's two gradient channels) as grey
    tiles side by side per filter.
    """
    filters = normalized_filters(weight.detach().float().cpu())
    count, channels, height, width = filters.shape
    if channels == 3:
        tiles = filters.permute(0, 2, 3, 1)  # (count, k, k, 3)
    else:
        side_by_side = filters.permute(0, 2, 1, 3).reshape(count, height, channels * width)
        tiles = side_by_side.unsqueeze(-1).expand(-1, -1, -1, 3)
    tiles = ((tiles + 1) / 2).clamp(0, 1).numpy()
    columns = columns or math.ceil(math.sqrt(count * 4 / 3))  # a landscape grid: 96 -> 12 x 8
    rows = math.ceil(count / columns)
    tile_h, tile_w = tiles.shape[1] * scale, tiles.shape[2] * scale
    canvas = np.ones((rows * (tile_h + border) + border, columns * (tile_w + border) + border, 3))
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        top, left = border + row * (tile_h + border), border + col * (tile_w + border)
        canvas[top:top + tile_h, left:left + tile_w] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
    return (canvas * 255).round().astype(np.uint8)


def first_layer_weight(encoder: nn.Module) -> Tensor:
    """The conv1 weights as trained (BatchNorm not folded in: its per-channel scale would be normalised
    away anyway, and a negative BN scale would flip the picture of a filter)."""
    return encoder.conv1.conv.weight


def save_filter_grid(encoder: nn.Module, out: Path, columns: int | None = None, scale: int = 4) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    with torch.no_grad():
        Image.fromarray(filter_grid(first_layer_weight(encoder), columns, scale)).save(encoded, "PNG")
    atomic_write_bytes(out, encoded.getvalue())
    return out
