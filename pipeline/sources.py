"""Source images: discovery in files and folders, deterministic choice of N, and strict loading to 8-bit RGB."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from common.errors import SourceImageError
from common.hashing import sha256_bytes

log = logging.getLogger(__name__)

# The image files every reader of a folder takes (render's sources, probe's and train's class folders): what
# `decode_rgb` reads, torchvision's ImageFolder list plus GIF (its first frame) and PNM.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                            ".pnm"})
# The one decompression-bomb limit: images of more pixels than this are refused, by every decoder of the toolkit,
# with a message quoting it (README says the same number). Twice Pillow's default threshold, 178,956,970 pixels
# (~179 Mpx, e.g. 16k x 11k): large photographs pass, crafted bombs do not.
MAX_SOURCE_PIXELS = 2 * 89_478_485
# scikit-image's bundled photographs: NASA (public domain) and CC0 images, shipped inside an installed dependency.
DEFAULT_POOL = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg")


@dataclass
class SourceImage:
    path: str
    sha256: str
    width: int
    height: int
    mode: str  # the file's original mode, before conversion to RGB
    rgb: np.ndarray  # H x W x 3 uint8, EXIF orientation applied

    def manifest_entry(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "width": self.width, "height": self.height,
                "mode": self.mode}


def default_pool() -> list[Path]:
    """The embedded default sources, in a fixed order."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in DEFAULT_POOL if (folder / name).is_file()]


def has_image_suffix(path: str | Path) -> bool:
    """Whether a folder reader takes `path` for an image file, by its suffix (IMAGE_SUFFIXES, any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def discover_sources(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted, de-duplicated list of image files.

    Each file keeps the path the user gave (a folder's files under the folder as given): the paths go into the
    manifest, which must not hold this machine's absolute paths for a relative --src (issue 32). Duplicates are
    found by the resolved path, the first spelling kept."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images = sorted(f for f in p.rglob("*") if f.is_file() and has_image_suffix(f))
            if not images:
                raise SourceImageError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(images)
        elif p.is_file():
            found.append(p)
        else:
            raise SourceImageError(f"{p}: no such file or folder")
    unique: dict[Path, Path] = {}
    for f in found:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def choose_order(n_candidates: int, seed: int) -> list[int]:
    """A permutation of the candidates, a pure function of (count, seed): which sources --n-src picks."""
    rng = np.random.default_rng([seed, 0x53524353])  # a stream of its own, apart from the per-sample streams
    return [int(i) for i in rng.permutation(n_candidates)]


def select_sources(candidates: list[Path], n_src: int, seed: int, min_side: int,
                   skip_bad: bool = False, warn=print) -> list[SourceImage]:
    """Pick and load `n_src` of `candidates`, deterministically from the seed, kept in candidate order.

    A bad image among those picked is an error, unless `skip_bad`, when the next candidate of the seeded order
    takes its place (each skip is reported through `warn`).
    """
    if n_src < 1:
        raise SourceImageError("--n-src must be at least 1")
    if len(candidates) < n_src:
        where = "the given sources" if candidates else "no sources"
        raise SourceImageError(f"--n-src {n_src} asks for more images than {where} hold ({len(candidates)})")
    picked: list[tuple[int, SourceImage]] = []
    for i in choose_order(len(candidates), seed) if n_src < len(candidates) else range(len(candidates)):
        try:
            picked.append((i, load_source(candidates[i], min_side)))
        except SourceImageError as e:
            if not skip_bad:
                raise SourceImageError(f"{e.message} (use --skip-bad to replace bad sources)") from None
            warn(f"skipped {e.message}")
        if len(picked) == n_src:
            break
    if len(picked) < n_src:
        raise SourceImageError(f"--n-src {n_src}: only {len(picked)} of {len(candidates)} sources are usable")
    return [s for _, s in sorted(picked, key=lambda t: t[0])]


def load_source(path: str | Path, min_side: int = 1) -> SourceImage:
    """Read an image file strictly into 8-bit RGB; every failure is a SourceImageError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceImageError(f"{path}: cannot read ({e.strerror or e})") from None
    rgb, mode = decode_rgb(data, path)
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise SourceImageError(f"{path}: {w}x{h} is smaller than the minimum source side of {min_side} px "
                               f"(see --min-src-side)")
    return SourceImage(path=str(path), sha256=sha256_bytes(data), width=w, height=h,
                       mode=mode, rgb=np.ascontiguousarray(rgb))


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB, decoded as render decodes sources (EXIF orientation applied, 16-bit
    scaled, bombs refused), so a labelled image reaches a trainer or probe as it would reach the renderer."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_rgb(data, path)[0]


def open_rgb(path: str | Path) -> Image.Image:
    """An image file as an 8-bit RGB PIL image, with exactly `read_rgb`'s pixels and errors, for loaders whose
    transforms take PIL images (labelled sets in `train supervised` and `probe`)."""
    plain = _plain_rgb_jpeg(path)
    return plain if plain is not None else Image.fromarray(read_rgb(path))


def _plain_rgb_jpeg(path: str | Path) -> Image.Image | None:
    """The image when it is an 8-bit RGB JPEG with no EXIF rotation and within the bomb limit, else None.

    For such a file `read_rgb` gives exactly Pillow's decoded pixels, but its copies and checks make a CIFAR-sized
    JPEG 1.7x slower to read; this path skips them. Anything else, failures included, is left to `read_rgb`, so its
    pixels and its error messages stay the only ones.
    """
    try:
        with Image.open(path, formats=("JPEG",)) as image:
            if (image.mode != "RGB" or image.width * image.height > MAX_SOURCE_PIXELS
                    or image.getexif().get(ExifTags.Base.Orientation, 1) != 1):
                return None
            image.load()
            return image
    except Exception:  # noqa: BLE001 - any failure is reported by read_rgb's decode, with its message
        return None


class _UndefinedPixels(ValueError):
    """Pixel values whose meaning as an 8-bit intensity cannot be known (see `_float_to_grey8`)."""


def decode_rgb(data: bytes, name: str | Path, min_side: int | None = None) -> tuple[np.ndarray, str]:
    """Encoded image bytes -> (H x W x 3 uint8 RGB, the file's own mode); a SourceImageError naming `name`.

    With `min_side`, a JPEG is decoded at reduced size by the decoder's DCT scaling (1/2, 1/4 or 1/8, Pillow's
    `draft`) as long as its shorter side stays at least `min_side`: for a loader that shrinks the image anyway,
    most of the decode is skipped. Other formats, and JPEGs that would fall below `min_side`, decode in full."""
    if not data:
        raise SourceImageError(f"{name}: empty file")
    try:
        return _decode_rgb(data, name, min_side)
    except Image.DecompressionBombError:
        raise SourceImageError(f"{name}: image too large, a possible decompression bomb "
                               f"(limit {MAX_SOURCE_PIXELS:,} pixels)") from None
    except _UndefinedPixels as e:
        raise SourceImageError(f"{name}: {e}") from None
    except UnidentifiedImageError:
        raise SourceImageError(f"{name}: not an image file, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SourceImageError(f"{name}: corrupt or truncated image ({e})") from None


_NOTICED_FRAMES: set[str] = set()  # files whose extra frames were reported, once per process


def draft_request(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """The (width, height) to ask Pillow's `draft` for so that the decoded shorter side stays >= `min_side` (draft
    picks the largest DCT reduction whose result is at least the requested size in both dimensions)."""
    width, height = size
    short = max(1, min(width, height))
    return -(-width * min_side // short), -(-height * min_side // short)


def _decode_rgb(data: bytes, name: str | Path, min_side: int | None = None) -> tuple[np.ndarray, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old_limit = Image.MAX_IMAGE_PIXELS
        # Pillow warns above this many pixels (an error here) and raises above twice it: one limit, MAX_SOURCE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS
        try:
            img = Image.open(io.BytesIO(data))  # the header only: format, mode, size (bomb-checked here)
            mode = img.mode
            rgb = _decode_plain_jpeg(data, img, min_side)
            if rgb is not None:
                return rgb, mode
            if min_side and img.format == "JPEG" and min(img.size) >= 2 * min_side:
                img.draft(img.mode if img.mode in ("L", "CMYK") else "RGB", draft_request(img.size, min_side))
            img.load()  # the first frame of a multi-frame file (GIF, TIFF pages, APNG, animated WebP)
            frames = getattr(img, "n_frames", 1)
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
        except Image.DecompressionBombWarning:
            raise Image.DecompressionBombError("bomb") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    if frames > 1 and str(name) not in _NOTICED_FRAMES:
        _NOTICED_FRAMES.add(str(name))
        log.warning("%s: %d frames; the first is used", name, frames)
    return _to_rgb8(img), mode


# Pillow's exif_transpose, as numpy views of an H x W x C array (Image.Transpose: FLIP_LEFT_RIGHT, ROTATE_180,
# FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90 for orientations 2..8)
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}
_CV2_REDUCED = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def dct_reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The DCT scaling denominator (1, 2, 4 or 8) Pillow's `draft` picks for `draft_request(size, min_side)`: the
    largest whose result keeps the shorter side >= `min_side`; 1 (full decode) below a 2x shrink or without one."""
    if not min_side or min(size) < 2 * min_side:
        return 1
    want_w, want_h = draft_request(size, min_side)
    fits = min(size[0] // want_w, size[1] // want_h)
    return next(m for m in (8, 4, 2, 1) if fits >= m)


def _decode_plain_jpeg(data: bytes, img: Image.Image, min_side: int | None) -> np.ndarray | None:
    """An 8-bit RGB or greyscale JPEG decoded by OpenCV (the shard reader's library), else None (Pillow decodes).

    Both wheels carry libjpeg-turbo with the same default IDCT and upsampling, so the pixels are Pillow's exactly
    (tests/pipeline/test_sources.py compares them, DCT-scaled and EXIF-rotated too); OpenCV writes RGB straight from
    the decoder where Pillow decodes into 4-byte pixels and unpacks them, 1.2x slower for an ImageNet photo. Only
    a file that ends with the JPEG end-of-image marker takes this path: libjpeg pads a truncated stream with grey
    and OpenCV returns it, where Pillow refuses it; so a truncated file, and anything OpenCV cannot decode, is
    left to Pillow and its messages. The EXIF orientation is Pillow's reading of the tag, applied as exif_transpose
    applies it."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or getattr(img, "bits", 8) != 8 \
            or not data.endswith(b"\xff\xd9"):
        return None
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION | _CV2_REDUCED[dct_reduction(img.size, min_side)]
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if rgb is None:
        return None
    turn = _ORIENT.get(orientation)
    return rgb if turn is None else np.ascontiguousarray(turn(rgb))


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's convert('RGB') clips 16-bit values at 255; scale the full range down instead.
        a = np.asarray(img).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _UndefinedPixels(f"32-bit integer image with values in [{a.min():.0f}, {a.max():.0f}]: only "
                                   f"0..255 (8-bit) or 0..65535 (16-bit) have a defined intensity; save it as an "
                                   f"8- or 16-bit image")
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if img.mode == "F":
        return np.repeat(_float_to_grey8(np.asarray(img))[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # Alpha is dropped, as the authors' generator did (PIL convert('RGB')); Image C (sf.png) is RGBA.
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))  # convert would copy an RGB image


_FLOAT_SLACK = 1e-6  # rounding in the tool that wrote the file: 1.0000001 is still 1


def _float_to_grey8(a: np.ndarray) -> np.ndarray:
    """A floating-point (mode F) image as 8-bit grey, by the one rule that needs no guess about its scale.

    Values in [0, 1] are intensities as fractions (scaled by 255); whole numbers in [0, 255] are 8-bit values
    stored as floats (used as they are). Anything else (negative values, fractions above 1, values above 255, NaN,
    infinities) has no defined intensity: stretching it to its own range would make a dark image bright and a
    clipped one black, so it is refused.
    """
    if a.size == 0:
        return a.astype(np.uint8)
    if not np.isfinite(a).all():
        raise _UndefinedPixels("floating-point image holding NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= -_FLOAT_SLACK and hi <= 1 + _FLOAT_SLACK:
        return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0 and hi <= 255 and np.array_equal(a, np.round(a)):
        return a.astype(np.uint8)
    raise _UndefinedPixels(f"floating-point image with values in [{lo:g}, {hi:g}]: only [0, 1] (scaled by 255) "
                           f"and whole numbers in [0, 255] have a defined intensity; save it as an 8- or 16-bit "
                           f"image")
