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
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline import FORMAT_VERSION
from pipeline.errors import ShardSetError

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
    tmp = path.with_name(f"{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as raw:
            hashing = _HashingWriter(raw, digest)
            with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, members in samples:
                    for ext, data in members:
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
            size = raw.tell()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardSetError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "single-image-ssl/shards":
        raise ShardSetError(f"{path}: not a manifest of a rendered set")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardSetError(f"{path}: format version {manifest.get('version')}, this tool reads {FORMAT_VERSION}")
    return manifest


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
