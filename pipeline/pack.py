"""`pipeline pack`: a labelled ImageFolder split (SRC/<class>/<files>) as a set of shards, for probes to stream.

Each sample is the image file's bytes, copied unchanged (no re-encoding: a probe sees exactly the pixels it
would read from the folder), plus `KEY.json` {"index", "label", "class", "path"}. Files are ordered by (class
name, path relative to SRC), so sample i is a pure function of the folder's listing and the set comes out
byte-identical whatever the workers, parts and resumes; shards are written through the same machinery as renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.errors import ShardSetError, SourceImageError
from common.hashing import sha256_bytes
from pipeline.shard_format import new_manifest, read_manifest, sample_key, shard_name
from pipeline.shard_writer import (
    SetSummary,
    check_part,
    config_differences,
    map_shards,
    open_set,
    worker_state,
    write_indexed_shard,
    write_part,
)
from pipeline.sources import decode_rgb

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
        listing = sha256_bytes("\n".join(f"{f.label}\t{f.path}" for f in self.files).encode())
        return {"source": str(self.source), "classes": self.classes, "shard_size": self.shard_size,
                "format": formats[0] if len(formats) == 1 else "mixed", "listing_sha256": listing}


def scan_split(src: str | Path, shard_size: int = 10_000) -> PackPlan:
    """The classes (sorted sub-folder names) and image files of an ImageFolder split, in sample order."""
    root = Path(src)  # as given: config.source goes into the manifest, never this machine's absolute path
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
    """Pack (or resume) part `part` = (I, N) of the split `src` into `out_dir`.

    Every image still to pack is decode-checked before the folder is touched, so a bad file leaves no set behind
    (and, the listing being unchanged, a fixed file resumes nothing stale); all bad files are reported at once.
    """
    check_part(part)
    plan = scan_split(src, shard_size)
    folder = Path(out_dir)
    digests = check_images(plan, _unpacked_shards(folder, plan, part), workers, progress, log)
    manifest = open_set(folder, _fresh_manifest(plan), _differences, force, log)
    return write_part(folder, manifest, part, lambda s: len(plan.shard_range(s)),
                      prepare=lambda: _PackState(plan, folder, digests), write_shard=pack_shard, workers=workers,
                      progress=progress, unit="image", log=log)


def _unpacked_shards(folder: Path, plan: PackPlan, part: tuple[int, int]) -> list[int]:
    """The shards of `part` that a pack into `folder` would write: those not listed by a manifest of this set."""
    mine = [s for s in range(plan.n_shards) if s % part[1] == part[0]]
    try:
        existing = read_manifest(folder) if folder.is_dir() else None
    except ShardSetError:
        existing = None  # open_set reports it, after the check
    if existing is None or _differences(existing, _fresh_manifest(plan)):
        return mine
    listed = {s["name"] for s in existing["shards"]}
    return [s for s in mine if shard_name(s) not in listed]


def check_images(plan: PackPlan, shards: list[int], workers: int = 1, progress: bool = False,
                 log=print) -> dict[int, str]:
    """Decode-check every image of `shards` (in `workers` processes); the sha256 of each file, by sample index.

    Raises one SourceImageError naming the first bad file in sample order; any others are logged first, so one
    run lists every file to fix.
    """
    digests: dict[int, str] = {}
    problems: list[tuple[int, str]] = []
    bar = tqdm(total=sum(len(plan.shard_range(s)) for s in shards), unit="image", desc="check",
               disable=not progress or not shards, smoothing=0.05)
    try:
        for shard_digests, shard_problems in map_shards(check_shard, _PackState(plan, None, {}), shards,
                                                        max(1, min(workers, len(shards)))):
            digests.update(shard_digests)
            problems.extend(shard_problems)
            bar.update(len(shard_digests) + len(shard_problems))
    finally:
        bar.close()
    if problems:
        problems.sort()
        for _, message in problems[1:]:
            log(f"also unusable: {message}")
        more = f" (and {len(problems) - 1} more unusable images, listed above)" if len(problems) > 1 else ""
        raise SourceImageError(f"{problems[0][1]}{more}; nothing was packed")
    return digests


def check_shard(shard: int) -> tuple[dict[int, str], list[tuple[int, str]]]:
    """In a worker: the digests of shard `shard`'s good images, and (index, message) for each bad one."""
    plan: PackPlan = worker_state().plan
    digests, problems = {}, []
    for i in plan.shard_range(shard):
        try:
            digests[i] = sha256_bytes(read_checked(plan.source / plan.files[i].path))
        except SourceImageError as e:
            problems.append((i, e.message))
    return digests, problems


def _fresh_manifest(plan: PackPlan) -> dict:
    return new_manifest(plan.config(), len(plan.files), plan.n_shards, kind="labelled", classes=plan.classes)


def _differences(old: dict, new: dict) -> list[str]:
    # the source folder may be mounted at another path by each part's machine: its listing is what must agree
    diff = config_differences(old, new, ignore=("source", "classes"))
    if old.get("kind") == "labelled" and old["config"].get("classes") != new["config"]["classes"]:
        diff.append(f"classes: {len(old['config'].get('classes', []))} here, {len(new['config']['classes'])} asked")
    return diff


@dataclass
class _PackState:
    plan: PackPlan
    folder: Path | None
    digests: dict[int, str]  # sha256 of each file when it was decode-checked, by sample index


def pack_shard(shard: int) -> dict:
    """Pack one shard in this process and return its manifest entry."""
    st: _PackState = worker_state()
    plan = st.plan

    def sample(i: int) -> tuple[str, list[tuple[str, bytes]]]:
        f = plan.files[i]
        data = read_checked(plan.source / f.path, st.digests.get(i))
        meta = json.dumps({"index": i, "label": f.label, "class": plan.classes[f.label], "path": f.path},
                          separators=(",", ":"), sort_keys=True)
        return sample_key(i), [(f.ext, data), ("json", meta.encode())]

    return write_indexed_shard(st.folder, shard, plan.shard_range(shard), sample)


def read_checked(path: Path, digest: str | None = None) -> bytes:
    """The file's bytes, once they are known to decode completely (a truncated file fails here, not in a probe).

    Bytes whose sha256 is `digest` were decode-checked already (by `check_images`) and are not decoded again;
    failures are one-line SourceImageErrors naming the file, from render's strict decoder.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if digest is None or sha256_bytes(data) != digest:  # unchecked, or changed since the check
        decode_rgb(data, path)
    return data
