"""A slow, obviously-correct renderer of the paper recipe's geometry, to check the fast path against."""

import math

import cv2
import numpy as np
from PIL import Image

from pipeline.augment import PaperParams


def reference_patch(rgb: np.ndarray, p: PaperParams, size: int) -> np.ndarray:
    """Rotate the whole image bilinearly (so the crop becomes axis-aligned), crop, resize with antialiasing."""
    h, w = rgb.shape[:2]
    side = 2 * int(math.ceil(math.hypot(w, h)))
    # canvas pixel centre c maps to source point (p.cx, p.cy) + R (c + 0.5 - side/2); the crop becomes axis-aligned
    t = math.radians(p.angle)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    trans = rot @ np.array([0.5 - side / 2, 0.5 - side / 2]) + [p.cx - 0.5, p.cy - 0.5]
    m = np.hstack([rot, trans[:, None]])
    canvas = cv2.warpAffine(rgb, m, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    box = (side / 2 - p.w / 2, side / 2 - p.h / 2, side / 2 + p.w / 2, side / 2 + p.h / 2)
    out = Image.fromarray(canvas).resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)
    out = np.asarray(out)
    return out[:, ::-1] if p.flip else out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
