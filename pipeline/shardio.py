"""The shard format on disk: deterministic tar writing, atomic files, and the manifest under a lock.

Several processes (`--part I/N` jobs) may write into one folder at once. Each shard is written under a temporary
name and renamed when complete; the manifest is rewritten whole, under an exclusive lock, from its current contents
plus the new shard, so it is never torn and never loses an entry, whatever the interleaving. Its shard list is kept
sorted, so the final manifest is byte-identical however the shards were scheduled.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline import FORMAT_VERSION
from pipeline.errors import ShardSetError
from pipeline.fileio import atomic_file, atomic_write_bytes

MANIFEST = "manifest.json"
SHARD_PATTERN = "patches-{:06d}.tar"
_LOCK = ".manifest.lock"


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def sample_key(index: int) -> str:
    return f"{index:09d}"


def write_tar(path: Path, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> dict:
    """Write (key, [(extension, bytes), ...]) samples as a plain POSIX tar, atomically.

    Every header field that could vary between machines or runs is fixed (mtime 0, owner root, mode 0644), so the
    bytes depend only on the samples. Returns the shard's size and sha256.
    """
    digest = hashlib.sha256()
    with atomic_file(path) as raw:
        hashing = _HashingWriter(raw, digest)
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                for ext, data in members:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        size = hashing.tell()
    return {"bytes": size, "sha256": digest.hexdigest()}


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through, so a shard is not re-read to hash it."""

    def __init__(self, raw, digest):
        self._raw, self._digest, self._pos = raw, digest, 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, b) -> int:
        self._digest.update(b)
        self._pos += len(b)
        return self._raw.write(b)


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardSetError(f"{path}: unreadable manifest ({e})") from None
    return check_manifest(manifest, path)


# What every reader of a manifest relies on, by kind of set; checked once here so that no reader meets a KeyError.
_FIELDS = {"config": dict, "n_samples": int, "n_shards": int, "shards": list}
_KIND_FIELDS = {"rendered": {"sources": list}, "labelled": {"classes": list}}
_CONFIG_FIELDS = {"rendered": {"format": str, "size": int, "shard_size": int, "n_patches": int},
                  "labelled": {"format": str, "shard_size": int, "classes": list}}
_SOURCE_FIELDS = {"path": str, "sha256": str, "width": int, "height": int, "mode": str}
_SHARD_FIELDS = {"name": str, "first": int, "count": int, "bytes": int, "sha256": str}
_SHARD_NAME = re.compile(r"patches-\d{6}\.tar")


def check_manifest(manifest: object, where: str | Path) -> dict:
    """`manifest` (parsed JSON) if it is a manifest this tool reads; else a one-line ShardSetError naming `where`."""
    if not isinstance(manifest, dict) or manifest.get("format") != "single-image-ssl/shards":
        raise ShardSetError(f"{where}: not a manifest of a rendered set")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardSetError(f"{where}: format version {manifest.get('version')}, this tool reads {FORMAT_VERSION}")
    kind = manifest.get("kind", "rendered")
    if kind not in _KIND_FIELDS:
        raise ShardSetError(f"{where}: malformed manifest (unknown kind {kind!r})")
    problem = (_field_problem(manifest, {**_FIELDS, **_KIND_FIELDS[kind]})
               or _field_problem(manifest["config"], _CONFIG_FIELDS[kind], "config.")
               or _entries_problem(manifest, "shards", _SHARD_FIELDS)
               or (kind == "rendered" and _entries_problem(manifest, "sources", _SOURCE_FIELDS))
               # readers label by `classes`, a resumed pack compares `config.classes`: they must be one list
               or (kind == "labelled" and manifest["config"]["classes"] != manifest["classes"]
                   and "config.classes differs from classes")
               or _consistency_problem(manifest, kind))
    if problem:
        raise ShardSetError(f"{where}: malformed manifest ({problem})")
    return manifest


def _field_problem(record: dict, fields: dict[str, type], prefix: str = "") -> str | None:
    for name, kind in fields.items():
        if name not in record:
            return f"missing {prefix}{name!r}"
        value = record[name]
        # bool is an int to Python, never to a manifest; a negative count or size is no count or size
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            expected = {dict: "an object", list: "a list", int: "a non-negative integer", str: "a string"}[kind]
            return f"{prefix}{name!r} is not {expected}"
    return None


def _entries_problem(manifest: dict, key: str, fields: dict[str, type]) -> str | None:
    for n, entry in enumerate(manifest[key]):
        where = f"{key}[{n}]"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        problem = _field_problem(entry, fields, f"{where}.")
        if problem:
            return problem
        if key == "shards" and not _SHARD_NAME.fullmatch(entry["name"]):
            # a name is joined to the set's folder: only the writer's own names, never a path elsewhere
            return f"{where}.name {entry['name']!r} is not patches-NNNNNN.tar"
    return None


def _consistency_problem(manifest: dict, kind: str) -> str | None:
    """What makes a manifest disagree with itself: no samples, no sources or classes, or shards whose place in
    the set is not the one the writer gives shard k (samples k * shard_size onwards, shard_size of them, the last
    one shorter), which also rules out overlapping shards and shards beyond the sample count."""
    n, config = manifest["n_samples"], manifest["config"]
    shard_size = config["shard_size"]
    if n == 0:
        return "n_samples is 0; a set holds at least one sample"
    if shard_size == 0:
        return "config.shard_size is 0"
    if kind == "rendered" and not manifest["sources"]:
        return "'sources' is empty; a rendered set comes from at least one image"
    if kind == "rendered" and config["n_patches"] != n:
        return f"config.n_patches {config['n_patches']} differs from n_samples {n}"
    if kind == "labelled" and not manifest["classes"]:
        return "'classes' is empty"
    n_shards = -(-n // shard_size)
    if manifest["n_shards"] != n_shards:
        return f"n_shards {manifest['n_shards']}, but {n} samples in shards of {shard_size} make {n_shards}"
    listed: set[str] = set()
    for i, shard in enumerate(manifest["shards"]):
        name, k = shard["name"], int(shard["name"][len("patches-"):-len(".tar")])
        if name in listed:
            return f"shards[{i}] {name} is listed twice"
        listed.add(name)
        if k >= n_shards:
            return f"shards[{i}] {name} is beyond the set's {n_shards} shards"
        first, count = k * shard_size, min(shard_size, n - k * shard_size)
        if (shard["first"], shard["count"]) != (first, count):
            return (f"shards[{i}] {name} lists samples from {shard['first']}, {shard['count']} of them; shard {k} "
                    f"of {n} samples in shards of {shard_size} holds {count} from {first}")
    return None


def dump_manifest(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


@contextlib.contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """An exclusive POSIX lock (lockf works across NFSv4 clients, unlike flock on some systems)."""
    with open(folder / _LOCK, "a+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def add_shard(folder: Path, entry: dict) -> dict:
    """List a completed shard in the manifest (under the lock) and return the updated manifest."""
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        if manifest is None:
            raise ShardSetError(f"{folder / MANIFEST}: disappeared while rendering")
        shards = {s["name"]: s for s in manifest["shards"]}
        shards[entry["name"]] = entry
        manifest["shards"] = sorted(shards.values(), key=lambda s: s["first"])
        atomic_write_bytes(folder / MANIFEST, dump_manifest(manifest))
        return manifest
