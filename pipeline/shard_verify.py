"""`pipeline verify` and `pipeline info`: check a set against its manifest; summarise it."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tqdm import tqdm

from common.errors import ShardSetError
from common.hashing import sha256_files
from pipeline.shard_format import (
    IMAGE_EXTENSIONS,
    MANIFEST,
    SHARD_GLOB,
    ShardMembers,
    load_manifest,
    member_kind,
    patch_size,
    patch_size_problem,
    sample_formats,
)
from pipeline.shard_reader import decode_bgr, parse_meta


def verify_set(folder: str | Path, decode: bool = True, progress: bool = False) -> list[str]:
    """Every problem found, one line each (empty: the set is complete and intact).

    Each listed shard is re-hashed against the manifest, and (with `decode`) each of its samples decoded and its
    keys checked against the shard's index range. Missing, truncated, altered and unlisted shards are reported.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    problems: list[str] = []
    listed = {s["name"] for s in manifest["shards"]}
    if len(listed) < manifest["n_shards"]:
        problems.append(f"{folder}: incomplete, {len(listed)} of {manifest['n_shards']} shards rendered")
    for extra in sorted(p.name for p in folder.glob(SHARD_GLOB) if p.name not in listed):
        problems.append(f"{folder / extra}: not listed in {MANIFEST} (an unfinished render?)")
    formats = sample_formats(manifest)
    size = patch_size(manifest)
    for s in tqdm(manifest["shards"], desc="verify", unit="shard", disable=not progress):
        problems.extend(_verify_shard(folder / s["name"], s, formats, decode, size))
    return problems


def shard_file_problem(path: Path, entry: dict) -> str | None:
    """The cheap checks of a listed shard (it exists, with its listed size): a problem line, or None."""
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, the manifest lists {entry['bytes']} (truncated or altered)"
    return None


def _verify_shard(path: Path, entry: dict, formats: frozenset[str], decode: bool, size: int | None) -> list[str]:
    problem = shard_file_problem(path, entry)
    if problem:
        return [problem]
    if sha256_files(path) != entry["sha256"]:
        return [f"{path}: sha256 differs from the manifest (altered)"]
    if not decode:
        return []
    return _decode_shard(path, entry, formats, size)


def _decode_shard(path: Path, entry: dict, formats: frozenset[str], size: int | None) -> list[str]:
    """The shard's members checked by the reader's rules (ShardMembers: the first breach ends the shard, as it
    stops the reader, in the same words), each image decoded and each .json parsed as the reader does."""
    members = ShardMembers(str(path), entry, formats)  # keys made as they are compared: nothing sized by count
    problems: list[str] = []
    sized = False
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                problem = members.member(member.name, member_kind(member))
                if problem:
                    return [*problems, problem]
                key, _, ext = member.name.partition(".")
                where, data = f"{path}:{key}", tar.extractfile(member).read()
                try:
                    if ext == "json":
                        parse_meta(data, where)
                        continue
                    image = decode_bgr(data, where)
                except ShardSetError as e:
                    problems.append(str(e))
                    continue
                if not sized and (problem := patch_size_problem(where, image, size)):
                    problems.append(problem)  # one line per shard: a set of another size has many
                    sized = True
    except (tarfile.TarError, OSError, ValueError) as e:
        return [*problems, f"{path}: unreadable shard, truncated or corrupt ({e})"]
    problem = members.end()
    return problems + ([problem] if problem else [])


def _first_patch_problem(folder: Path, manifest: dict) -> str | None:
    """Whether the first patch of the first listed shard has the manifest's size: a cheap check (one small image)
    that the manifest describes these shards. A missing or unreadable shard is left to `pipeline verify`."""
    size = patch_size(manifest)
    if size is None or not manifest["shards"]:
        return None
    path = folder / manifest["shards"][0]["name"]
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.name.partition(".")[2] in IMAGE_EXTENSIONS:
                    data = tar.extractfile(member).read()
                    where = f"{path}:{member.name.partition('.')[0]}"
                    try:
                        image = decode_bgr(data, where)
                    except ShardSetError as e:
                        return str(e)
                    return patch_size_problem(where, image, size)
    except (tarfile.TarError, OSError):
        return None
    return None


def describe_set(folder: str | Path) -> str:
    """A human-readable summary: configuration, sources, progress, bytes."""
    m = load_manifest(folder)
    problem = _first_patch_problem(Path(folder), m)
    if problem:
        raise ShardSetError(problem)
    done = sum(s["count"] for s in m["shards"])
    size = sum(s["bytes"] for s in m["shards"])
    lines = [f"set:      {folder}",
             f"samples:  {done:,} of {m['n_samples']:,} rendered ({len(m['shards'])} of {m['n_shards']} shards)",
             f"bytes:    {size:,} ({size / 2**30:.2f} GiB; {size / max(done, 1) / 1024:.1f} KiB/sample)",
             "config:   " + ", ".join(f"{k}={v}" for k, v in m["config"].items() if k != "classes")]
    if m.get("kind") == "labelled":
        shown = ", ".join(m["classes"][:10]) + (", ..." if len(m["classes"]) > 10 else "")
        lines.append(f"classes:  {len(m['classes'])} ({shown})")
        return "\n".join(lines)
    lines.append(f"sources:  {len(m['sources'])}")
    for s in m["sources"][:10]:
        lines.append(f"  {s['path']}  {s['width']}x{s['height']} {s['mode']}  sha256 {s['sha256'][:16]}")
    if len(m["sources"]) > 10:
        lines.append(f"  ... and {len(m['sources']) - 10} more")
    return "\n".join(lines)
