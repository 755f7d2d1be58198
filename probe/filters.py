"""`probe filters`: the first layer's filters as a picture (the paper's Figure 2)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from common.errors import EncoderError
from common.fileio import atomic_write_bytes
from train.models.contract import TapEncoder


def normalized_filters(weight: Tensor) -> Tensor:
    """Each filter scaled into (-1, 1) by its own largest magnitude, as in the paper's Figure 2."""
    peak = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return weight / peak


def default_columns(weight: Tensor) -> int:
    """Tiles per row for a landscape grid (about 4:3): 96 square tiles -> 12 x 8; 96 Sobel tiles, each two
    filters wide -> 8 x 12."""
    count, channels, height, width = weight.shape
    tile_aspect = width * (1 if channels == 3 else channels) / height
    return math.ceil(math.sqrt(count * 4 / 3 / tile_aspect))


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
    columns = columns or default_columns(filters)
    rows = math.ceil(count / columns)
    tile_h, tile_w = tiles.shape[1] * scale, tiles.shape[2] * scale
    canvas = np.ones((rows * (tile_h + border) + border, columns * (tile_w + border) + border, 3))
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        top, left = border + row * (tile_h + border), border + col * (tile_w + border)
        canvas[top:top + tile_h, left:left + tile_w] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
    return (canvas * 255).round().astype(np.uint8)


def first_layer_weight(encoder: TapEncoder) -> Tensor:
    """The encoder's first-layer filters as trained, (out, in, k, k); an error for an encoder without them."""
    weight = encoder.first_layer_weight()
    arch = getattr(encoder, "arch", type(encoder).__name__)
    if weight is None:
        raise EncoderError(f"architecture {arch!r} has no learnt first-layer filters to draw")
    if weight.dim() != 4:
        raise EncoderError(f"architecture {arch!r}: first-layer weight of shape {tuple(weight.shape)}, "
                           "expected (out, in, k, k)")
    return weight


MIN_SHEET_WIDTH = 600  # px: the default scale makes the sheet at least this wide, legible at a glance
TITLE_HEIGHT = 28  # px of each line of the title band above the grid
# A Sobel front end feeds conv1 the grey image's two gradients (train.models.Sobel: channel 0 d/dx, channel 1
# d/dy), which filter_grid draws side by side; without this note the two halves of a tile read as one filter.
SOBEL_NOTE = "Sobel input: tile halves weigh the x-gradient (left), y-gradient (right)"


def filter_notes(weight: Tensor) -> list[str]:
    """What a reader needs to read a grid of `weight` that colour tiles do not say (a Sobel encoder's halves)."""
    return [SOBEL_NOTE] if weight.shape[1] == 2 else []


def default_scale(weight: Tensor, columns: int | None = None, border: int = 1) -> int:
    """The smallest whole number of pixels per weight that makes the grid at least MIN_SHEET_WIDTH wide."""
    _, channels, _, width = weight.shape
    columns = columns or default_columns(weight)
    tile_width = width * (1 if channels == 3 else channels)
    return max(1, math.ceil((MIN_SHEET_WIDTH - border * (columns + 1)) / (columns * tile_width)))


def titled(grid: np.ndarray, title: str, notes: list[str] | tuple[str, ...] = ()) -> np.ndarray:
    """`grid` under a white band with `title` and each of `notes` on a line of its own in black (each truncated
    with an ellipsis to the grid's width)."""
    lines = [title, *notes]
    band = Image.new("RGB", (grid.shape[1], TITLE_HEIGHT * len(lines)), "white")
    draw = ImageDraw.Draw(band)
    for index, line in enumerate(lines):
        font = ImageFont.load_default(size=16 if index == 0 else 13)
        text = line
        while len(text) > 1 and draw.textlength(text, font=font) > grid.shape[1] - 8:
            text = text[:-2] + "…"
        draw.text((4, index * TITLE_HEIGHT + (TITLE_HEIGHT - 16) // 2), text, fill="black", font=font)
    return np.concatenate([np.asarray(band), grid], axis=0)


def save_filter_grid(encoder: TapEncoder, out: Path, columns: int | None = None, scale: int | None = None,
                     title: str | None = None, notes: list[str] | tuple[str, ...] = ()) -> Path:
    """Write `encoder`'s first-layer filters as a PNG grid (atomically), titled; returns `out`.

    `scale` (pixels per weight) defaults to the smallest that makes the sheet MIN_SHEET_WIDTH px wide; the title
    defaults to the architecture and the first tap's name. `notes` (a probe's accuracy) go on lines under the
    title, followed by what the halves of a Sobel encoder's tiles are.
    """
    weight = first_layer_weight(encoder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        grid = filter_grid(weight, columns, scale or default_scale(weight, columns))
    arch = getattr(encoder, "arch", type(encoder).__name__)
    count, channels, height, width = weight.shape
    title = title or f"{arch}: {encoder.taps[0]} filters ({count} x {channels} x {height} x {width})"
    encoded = io.BytesIO()
    Image.fromarray(titled(grid, title, [*notes, *filter_notes(weight)])).save(encoded, "PNG")
    atomic_write_bytes(out, encoded.getvalue())
    return out
