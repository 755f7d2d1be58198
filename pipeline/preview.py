"""`pipeline preview`: a contact sheet of random samples of a set (as the paper's figures 7-10)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import ShardSetError
from pipeline.shardio import sample_key
from pipeline.shards import decode_image, load_manifest


def contact_sheet(folder: str | Path, out: str | Path, rows: int = 8, cols: int = 8, seed: int = 0,
                  tile: int | None = None, gap: int = 2) -> Path:
    """Draw rows x cols random samples (seeded) into one PNG; reads only the members it shows."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    shards = manifest["shards"]
    if not shards:
        raise ShardSetError(f"{folder}: no complete shard to preview")
    total = sum(s["count"] for s in shards)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(total, size=min(rows * cols, total), replace=False).tolist())
    images = []
    offsets = np.cumsum([0] + [s["count"] for s in shards])
    by_shard: dict[int, list[int]] = {}
    for p in picks:
        j = int(np.searchsorted(offsets, p, side="right") - 1)
        by_shard.setdefault(j, []).append(shards[j]["first"] + p - int(offsets[j]))
    fmt = manifest["config"]["format"]
    for j, indices in by_shard.items():
        wanted = {f"{sample_key(i)}.{fmt}" for i in indices}
        with tarfile.open(folder / shards[j]["name"]) as tar:
            for member in tar:
                if member.name in wanted:
                    images.append(decode_image(tar.extractfile(member).read(), member.name))
    size = tile or manifest["config"]["size"]
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap) + gap), (255, 255, 255))
    for n, im in enumerate(images):
        r, c = divmod(n, cols)
        pil = Image.fromarray(im)
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR)
        sheet.paste(pil, (gap + c * (size + gap), gap + r * (size + gap)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
