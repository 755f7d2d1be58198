"""Picture sheets shared by `probe style` and `probe visualize`: images in [0, 1], loading of sources, and
titled grids of panels written as PNG (atomically)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from common.fileio import atomic_write_bytes
from pipeline.sources import read_rgb


def load_image(path: str | Path, size: int) -> Tensor:
    """An image file as a (1, 3, H, W) float tensor in [0, 1], its longer side resized to `size` px.

    Decoded as every source is (pipeline.sources.read_rgb: EXIF orientation, 16-bit scaled, bombs refused);
    a SourceImageError names the file otherwise.
    """
    rgb = Image.fromarray(read_rgb(path))
    scale = size / max(rgb.size)
    resized = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.LANCZOS)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(image: Tensor) -> np.ndarray:
    """A (3, H, W) or (1, 3, H, W) tensor in [0, 1] as an H x W x 3 uint8 array."""
    image = image.detach().float().cpu().reshape(-1, *image.shape[-3:])[0]
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def tile(images: list[np.ndarray], columns: int | None = None, border: int = 1) -> np.ndarray:
    """Equal-sized H x W x 3 uint8 images in a grid (`columns` wide, a square by default), white borders."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    height, width = images[0].shape[:2]
    canvas = np.full((rows * (height + border) + border, columns * (width + border) + border, 3), 255, np.uint8)
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        top, left = border + row * (height + border), border + col * (width + border)
        canvas[top:top + height, left:left + width] = image
    return canvas


def save_image(image: Tensor, out: Path) -> Path:
    """A (1, 3, H, W) or (3, H, W) image in [0, 1] as a PNG at `out` (atomically)."""
    encoded = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(encoded, "PNG")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, encoded.getvalue())
    return out


@dataclass
class Panel:
    """One picture of a sheet with its title above it and, optionally, a caption under it (a measured accuracy)."""

    title: str
    image: np.ndarray  # H x W x 3 uint8
    caption: str = ""


def save_sheet(rows: list[list[Panel]], out: Path, title: str, row_labels: list[str] | None = None,
               panel_inches: float = 2.2) -> Path:
    """Panels in rows (a row may be shorter than the longest), each captioned, the sheet titled; a PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    # panels as tall as the tallest picture's aspect asks (a wide photo's row is not padded to a square)
    aspect = max(panel.image.shape[0] / panel.image.shape[1] for row in rows for panel in row)
    caption_lines = max(panel.caption.count("\n") + 1 if panel.caption else 0 for row in rows for panel in row)
    fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                             figsize=(panel_inches * columns,
                                      (panel_inches * aspect + 0.35 + 0.22 * caption_lines) * len(rows)
                                      + 0.3 + 0.2 * (title.count("\n") + 1)))
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            ax.imshow(row[c].image, interpolation="nearest")
            ax.set_title(row[c].title, fontsize=10)
            if row[c].caption:
                ax.set_xlabel(row[c].caption, fontsize=10)
            for spine in ax.spines.values():
                spine.set_visible(False)
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=11)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    fig.savefig(encoded, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out, encoded.getvalue())
    return out
