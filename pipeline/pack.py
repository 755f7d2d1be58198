"""`pipeline pack`: a labelled ImageFolder split (SRC/<class>/<files>) as a set of shards, for probes to stream.

Each sample is the image file's bytes, copied unchanged (no re-encoding: a probe sees exactly the pixels it
would read from the folder), plus `KEY.json` {"index", "label", "class", "path"}. Files are ordered by (class
name, path relative to SRC), so sample i is a pure function of the folder's listing and the set comes out
byte-identical whatever the workers, parts and resumes; shards are written through the same machinery as renders.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline import FORMAT_VERSION
from pipeline.errors import ShardSetError, SourceImageError
from pipeline.shardio import sample_key
from pipeline.shardset import (
    SetSummary,
    check_part,
    config_differences,
    open_set,
    worker_state,
    write_indexed_shard,
    write_part,
)

# Only formats every reader decodes are copied as they are; anything else would need re-encoding.
EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}


@dataclass(frozen=True)
class LabelledFile:
    path: str  # relative to the split's folder, POSIX separators
    label: int
    ext: str  # the sample's extension in the shard: jpg or png


@dataclass(frozen=True)
class PackPlan:
    """What a pack writes: the split's classes and files in sample order, and the shard size."""

    source: Path
    classes: list[str]
    files: list[LabelledFile]
    shard_size: int

    @property
    def n_shards(self) -> int:
        return -(-len(self.files) // self.shard_size)

    def shard_range(self, shard: int) -> range:
        first = shard * self.shard_size
        return range(first, min(first + self.shard_size, len(self.files)))

    def config(self) -> dict:
        formats = sorted({f.ext for f in self.files})
        listing = hashlib.sha256("\n".join(f"{f.label}\t{f.path}" for f in self.files).encode()).hexdigest()
        return {"source": str(self.source), "classes": self.classes, "shard_size": self.shard_size,
                "format": formats[0] if len(formats) == 1 else "mixed", "listing_sha256": listing}


def scan_split(src: str | Path, shard_size: int = 10_000) -> PackPlan:
    """The classes (sorted sub-folder names) and image files of an ImageFolder split, in sample order."""
    root = Path(src).resolve()
    if not root.is_dir():
        raise ShardSetError(f"{src}: no such folder")
    if shard_size < 1:
        raise ShardSetError("--shard-size must be at least 1")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ShardSetError(f"{src}: no class folders (expected {src}/<class>/<image>)")
    files: list[LabelledFile] = []
    for label, name in enumerate(classes):
        found = sorted(p.relative_to(root).as_posix() for p in (root / name).rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            raise ShardSetError(f"{root / name}: empty class folder (no image files)")
        files.extend(LabelledFile(rel, label, _extension(root / rel)) for rel in found)
    return PackPlan(root, classes, files, shard_size)


def _extension(path: Path) -> str:
    ext = EXTENSIONS.get(path.suffix.lower())
    if ext is None:
        raise SourceImageError(f"{path}: not a JPEG or PNG file; pack copies images unchanged and takes "
                               f"{', '.join(sorted(EXTENSIONS))} only (convert this file or move it out)")
    return ext


def pack_set(src: str | Path, out_dir: str | Path, shard_size: int = 10_000, workers: int = 1,
             part: tuple[int, int] = (0, 1), force: bool = False, progress: bool = False, log=print) -> SetSummary:
    """Pack (or resume) part `part` = (I, N) of the split `src` into `out_dir`."""
    check_part(part)
    plan = scan_split(src, shard_size)
    folder = Path(out_dir)
    manifest = open_set(folder, _fresh_manifest(plan), _differences, force, log)
    return write_part(folder, manifest, part, lambda s: len(plan.shard_range(s)),
                      prepare=lambda: _PackState(plan, folder), write_shard=pack_shard, workers=workers,
                      progress=progress, unit="image", log=log)


def _fresh_manifest(plan: PackPlan) -> dict:
    return {
        "format": "single-image-ssl/shards",
        "version": FORMAT_VERSION,
        "kind": "labelled",
        "config": plan.config(),
        "classes": plan.classes,
        "n_samples": len(plan.files),
        "n_shards": plan.n_shards,
        "shards": [],
    }


def _differences(old: dict, new: dict) -> list[str]:
    # the source folder may be mounted at another path by each part's machine: its listing is what must agree
    diff = config_differences(old, new, ignore=("source", "classes"))
    if old.get("kind") == "labelled" and old["config"].get("classes") != new["config"]["classes"]:
        diff.append(f"classes: {len(old['config'].get('classes', []))} here, {len(new['config']['classes'])} asked")
    return diff


@dataclass
class _PackState:
    plan: PackPlan
    folder: Path


def pack_shard(shard: int) -> dict:
    """Pack one shard in this process and return its manifest entry."""
    st: _PackState = worker_state()
    plan = st.plan

    def sample(i: int) -> tuple[str, list[tuple[str, bytes]]]:
        f = plan.files[i]
        data = read_checked(plan.source / f.path)
        meta = json.dumps({"index": i, "label": f.label, "class": plan.classes[f.label], "path": f.path},
                          separators=(",", ":"), sort_keys=True)
        return sample_key(i), [(f.ext, data), ("json", meta.encode())]

    return write_indexed_shard(st.folder, shard, plan.shard_range(shard), sample)


def read_checked(path: Path) -> bytes:
    """The file's bytes, once they are known to decode completely (a truncated file fails here, not in a probe)."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as e:  # PIL raises several types for truncated, corrupt or foreign files
        raise SourceImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return data
