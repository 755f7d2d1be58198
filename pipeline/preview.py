"""`pipeline preview`: a contact sheet of random samples of a set (as the paper's figures 7-10)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common.errors import ShardSetError, ToolkitError
from common.fileio import atomic_write_bytes
from pipeline.shard_format import load_manifest, sample_formats, sample_key
from pipeline.shard_reader import decode_image
from pipeline.shard_verify import shard_file_problem

# The sheet's file formats, by suffix; both are lossless enough to judge patches by.
SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
# A packed (labelled) set keeps each image's own size: each is fitted into a square tile of this side.
LABELLED_TILE = 128


def contact_sheet(folder: str | Path, out: str | Path, rows: int = 8, cols: int = 8, seed: int = 0,
                  tile: int | None = None, gap: int = 2) -> Path:
    """Draw rows x cols random samples (seeded) into one image; reads only the shards it shows from.

    A damaged shard or sample is a one-line ShardSetError naming it; the sheet is written atomically.
    """
    out, folder = Path(out), Path(folder)
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be at least 1, not {rows} x {cols}")
    if out.suffix.lower() not in SHEET_FORMATS:
        raise ValueError(f"{out}: the sheet's name must end in {', '.join(SHEET_FORMATS)}")
    manifest = load_manifest(folder)
    shards = manifest["shards"]
    if not shards:
        raise ShardSetError(f"{folder}: no complete shard to preview")
    offsets = np.cumsum([0] + [s["count"] for s in shards])
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(int(offsets[-1]), size=min(rows * cols, int(offsets[-1])), replace=False).tolist())
    by_shard: dict[int, list[int]] = {}
    for p in picks:
        j = int(np.searchsorted(offsets, p, side="right") - 1)
        by_shard.setdefault(j, []).append(shards[j]["first"] + p - int(offsets[j]))
    formats = sample_formats(manifest)
    images = []
    for j, indices in by_shard.items():
        images.extend(_read_images(folder / shards[j]["name"], shards[j], {sample_key(i) for i in indices}, formats))
    size = tile or manifest["config"].get("size", LABELLED_TILE)
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap) + gap), (255, 255, 255))
    for n, im in enumerate(images):
        r, c = divmod(n, cols)
        pil = Image.fromarray(im)
        if pil.size != (size, size):  # a labelled image keeps its aspect ratio, on white
            pil = ImageOps.pad(pil, (size, size), Image.BILINEAR, color=(255, 255, 255))
        sheet.paste(pil, (gap + c * (size + gap), gap + r * (size + gap)))
    _write_sheet(sheet, out)
    return out


def _read_images(path: Path, entry: dict, keys: set[str], formats: frozenset[str]) -> list[np.ndarray]:
    """The images of samples `keys` of one shard, in shard order; a damaged shard is a one-line error."""
    # the cheap checks of `pipeline verify` (missing, cut): hashing every shard would cost more than the preview
    problem = shard_file_problem(path, entry)
    if problem:
        raise ShardSetError(f"{problem}; run pipeline verify {path.parent}")
    images = []
    try:
        with tarfile.open(path, "r:") as tar:  # shards are plain tars; "r:*" would list every codec it tried
            for member in tar:
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member) if key in keys and ext in formats else None
                if data is not None:
                    images.append(decode_image(data.read(), f"{path}:{member.name}"))
    except (tarfile.TarError, OSError) as e:
        reason = " ".join(str(e).split())
        raise ShardSetError(f"{path}: unreadable ({reason}); run pipeline verify {path.parent}") from None
    if len(images) != len(keys):
        raise ShardSetError(f"{path}: {len(keys) - len(images)} of the samples to show are missing (altered?); "
                            f"run pipeline verify {path.parent}")
    return images


def _write_sheet(sheet: Image.Image, out: Path) -> None:
    encoded = io.BytesIO()
    sheet.save(encoded, SHEET_FORMATS[out.suffix.lower()])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, encoded.getvalue())
    except OSError as e:
        raise ToolkitError(f"{out}: cannot write the sheet ({e.strerror or e})") from None
