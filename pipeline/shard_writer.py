"""Writing a set of shards: deterministic tars, the manifest under a lock, and the orchestration shared by
`pipeline render` and `pipeline pack` (resume, parts, refusing a different set, the worker pool).

Several processes (`--part I/N` jobs) may write into one folder at once. Each shard is written under a temporary
name and renamed when complete; the manifest is rewritten whole, under an exclusive lock, from its current contents
plus the new shard, so it is never torn and never loses an entry, whatever the interleaving. Its shard list is kept
sorted, so the final manifest is byte-identical however the shards were scheduled. A shard is written under its
own lock (`NAME.lock`, recording host and pid): parts writing disjoint shards run in parallel, a second writer of
the same shard is refused in one line naming the holder, and a set is not replaced (--force) while one is held.

A writer gives the manifest it would start from (`fresh`), how to tell whether an existing manifest describes the
same set, and a module-level function that writes one shard in a worker and returns its manifest entry. Shards of
part (I, N) are those s with s mod N == I; a shard appears under its final name only when complete, so any number
of parts and workers, interrupted and resumed in any order, make the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import multiprocessing as mp
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.errors import ShardSetError
from common.fileio import atomic_file, atomic_write_bytes, folder_lock, remove_dead_temporaries
from pipeline.shard_format import MANIFEST, SHARD_GLOB, dump_manifest, read_manifest, shard_name

_LOCK = ".manifest.lock"
SHARD_WRITER = "render or pack writing this shard"  # who holds a shard's lock, for folder_lock's message


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


@contextlib.contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """An exclusive POSIX lock (lockf works across NFSv4 clients, unlike flock on some systems)."""
    with open(folder / _LOCK, "a+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def add_shard(folder: Path, entry: dict, opened: dict | None = None) -> dict:
    """List a completed shard in the manifest (under the lock) and return the updated manifest. `opened`: the
    manifest this writer started from; a manifest of another set (replaced by a --force meanwhile) is refused."""
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        if manifest is None:
            raise ShardSetError(f"{folder / MANIFEST}: disappeared while rendering")
        if opened is not None and (manifest["config"], manifest["n_shards"]) != (opened["config"],
                                                                                 opened["n_shards"]):
            raise ShardSetError(f"{folder}: replaced by another set while this part ran (a --force render or "
                                f"pack); {entry['name']} is not listed")
        shards = {s["name"]: s for s in manifest["shards"]}
        shards[entry["name"]] = entry
        manifest["shards"] = sorted(shards.values(), key=lambda s: s["first"])
        atomic_write_bytes(folder / MANIFEST, dump_manifest(manifest))
        return manifest


Differences = Callable[[dict, dict], list[str]]


@dataclass
class SetSummary:
    folder: Path
    rendered: int  # shards written by this call
    already: int  # shards of this part that were complete before
    complete: bool  # every shard of the set is listed
    manifest: dict


def check_part(part: tuple[int, int]) -> None:
    index, n_parts = part
    if not 0 <= index < n_parts:
        raise ShardSetError(f"--part {index}/{n_parts}: I must be in 0..{n_parts - 1}")


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """One line per configuration entry that differs (entries in `ignore` may differ between parts)."""
    kinds = old.get("kind", "rendered"), new.get("kind", "rendered")
    if kinds[0] != kinds[1]:  # a rendered set and a packed one share no configuration worth listing
        return [f"a {kinds[0]} set, not a {kinds[1]} one"]
    return [f"{k}: {old['config'].get(k)!r} here, {v!r} asked" for k, v in new["config"].items()
            if k not in ignore and old["config"].get(k) != v]


def open_set(folder: Path, fresh: dict, differences: Differences, force: bool, log) -> dict:
    """Create the manifest, or check that the folder holds this very set (then resume it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with manifest_lock(folder):
        # every manifest write holds this lock, so a temporary seen here is a killed writer's leftover
        for tmp in folder.glob(f"{MANIFEST}.tmp-*"):
            tmp.unlink(missing_ok=True)
        existing = read_manifest(folder)
        if existing is not None:
            diff = differences(existing, fresh)
            if not diff:
                return _drop_damaged(folder, existing)
            if not force:
                raise ShardSetError(f"{folder} holds a different set ({'; '.join(diff)}); use --force to replace "
                                    f"it or choose another --out")
            log(f"{folder}: replacing a different set ({'; '.join(diff)})")
        elif any(folder.glob(SHARD_GLOB)) and not force:
            raise ShardSetError(f"{folder} holds shards but no {MANIFEST}; use --force to replace them")
        _check_no_shard_writer(folder, max(fresh["n_shards"], existing["n_shards"] if existing else 0))
        _remove_set(folder)
        atomic_write_bytes(folder / MANIFEST, dump_manifest(fresh))
        return fresh


def write_part(folder: Path, manifest: dict, part: tuple[int, int], shard_count: Callable[[int], int], *,
               prepare: Callable[[], Any], write_shard: Callable[[int], dict], workers: int, progress: bool,
               unit: str, log) -> SetSummary:
    """Write the missing shards of `part`, listing each in the manifest as it completes.

    `prepare()` builds the workers' state only when there is work (it may be costly); in each worker,
    `write_shard(s)` (a module-level function, for spawn) writes shard s, reading that state from `worker_state()`.
    """
    index, n_parts = part
    n_shards, opened = manifest["n_shards"], manifest
    listed = {s["name"] for s in manifest["shards"]}
    mine = [s for s in range(n_shards) if s % n_parts == index]
    todo = [s for s in mine if shard_name(s) not in listed]
    if not todo:
        complete = len(manifest["shards"]) == n_shards
        log(f"{folder}: {'set complete' if complete else f'part {index}/{n_parts} complete'}, nothing to do")
        return SetSummary(folder, 0, len(mine), complete, manifest)

    state = prepare()
    bar = tqdm(total=sum(shard_count(s) for s in todo), unit=unit, desc=f"{folder.name}", disable=not progress,
               smoothing=0.05)
    try:
        for entry in map_shards(write_shard, state, todo, max(1, min(workers, len(todo)))):
            manifest = add_shard(folder, entry, opened)
            bar.update(entry["count"])
    except KeyboardInterrupt:
        raise ShardSetError(f"{folder}: interrupted; complete shards are kept, run the same command to resume") \
            from None
    finally:
        bar.close()
    complete = len(manifest["shards"]) == n_shards
    if complete:  # a live writer's temporary stays (it holds its shard's lock); a killed one's here goes
        remove_dead_temporaries(folder, [shard_name(s) for s in range(n_shards)])
    return SetSummary(folder, len(todo), len(mine) - len(todo), complete, manifest)


def _drop_damaged(folder: Path, manifest: dict) -> dict:
    """A listed shard whose file is gone or has the wrong size is delisted, to be written again."""
    kept = [s for s in manifest["shards"]
            if (folder / s["name"]).is_file() and (folder / s["name"]).stat().st_size == s["bytes"]]
    if len(kept) != len(manifest["shards"]):
        manifest = {**manifest, "shards": kept}
        atomic_write_bytes(folder / MANIFEST, dump_manifest(manifest))
    return manifest


def _check_no_shard_writer(folder: Path, n_shards: int) -> None:
    """Refuse (one line naming the holder) to replace a set while another process writes one of its shards: each
    shard's lock is taken and released in turn (a writer holds it for the whole shard)."""
    names = {shard_name(s) for s in range(n_shards)} | {p.name for p in folder.glob(SHARD_GLOB)}
    for name in sorted(names):
        if (folder / f"{name}.lock").exists():
            with folder_lock(folder / name, SHARD_WRITER):
                pass


def _remove_set(folder: Path) -> None:
    for f in [*folder.glob(SHARD_GLOB), *folder.glob(f"{SHARD_GLOB}.tmp-*"), folder / MANIFEST]:
        f.unlink(missing_ok=True)


def _remove_temporaries(folder: Path, shards) -> None:
    for s in shards:
        for tmp in folder.glob(f"{shard_name(s)}.tmp-*"):
            tmp.unlink(missing_ok=True)


def write_indexed_shard(folder: Path, shard: int, indices: range,
                        sample: Callable[[int], tuple[str, list[tuple[str, bytes]]]]) -> dict:
    """Write shard `shard` holding samples `indices` (`sample(i)` gives (key, [(ext, bytes), ...])); its entry.

    The shard's lock (`NAME.lock`, host and pid) is held while it is written: parts writing other shards run in
    parallel, but a second writer of this very shard (the same part run twice, overlapping --part splits) is
    refused in one line naming the holder, and no writer removes another's temporary file (issue 32). Under the
    lock, a temporary of this shard is a killed writer's leftover."""
    name = shard_name(shard)
    with folder_lock(folder / name, SHARD_WRITER):
        _remove_temporaries(folder, [shard])
        info = write_tar(folder / name, map(sample, indices))
    return {"name": name, "first": indices.start, "count": len(indices), **info}


_WORKER_STATE: Any = None


def install_worker_state(state: Any) -> None:
    """Make `state` what `worker_state()` returns in this process (None: keep the one inherited by fork)."""
    global _WORKER_STATE
    if state is not None:
        _WORKER_STATE = state


def worker_state() -> Any:
    return _WORKER_STATE


def map_shards(work: Callable[[int], Any], state: Any, todo: list[int], workers: int) -> Iterator[Any]:
    """`work(s)` for each shard s of `todo` in `workers` processes (reading `state` from `worker_state()`), as
    each completes."""
    init = install_worker_state
    if workers == 1:
        init(state)
        for s in todo:
            yield work(s)
        return
    # fork shares the state copy-on-write (installed here, before the pool forks); under spawn it is pickled
    # once per worker
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    init(state)
    with mp.get_context(method).Pool(workers, initializer=init,
                                     initargs=(None if method == "fork" else state,)) as pool:
        try:
            yield from pool.imap_unordered(work, todo)
        except BaseException:
            pool.terminate()
            raise
