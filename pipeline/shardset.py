"""Writing a set of shards, whatever fills them: the resume, parts, refuse-a-different-set and worker-pool logic
shared by `pipeline render` and `pipeline pack`.

A writer gives the manifest it would start from (`fresh`), how to tell whether an existing manifest describes the
same set, and a module-level function that writes one shard in a worker and returns its manifest entry. Shards of
part (I, N) are those s with s mod N == I; a shard appears under its final name only when complete, so any number
of parts and workers, interrupted and resumed in any order, make the same bytes.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.errors import ShardSetError
from pipeline.fileio import atomic_write_bytes
from pipeline.shardio import (
    MANIFEST,
    add_shard,
    dump_manifest,
    manifest_lock,
    read_manifest,
    shard_name,
    write_tar,
)

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
        elif any(folder.glob("patches-*.tar")) and not force:
            raise ShardSetError(f"{folder} holds shards but no {MANIFEST}; use --force to replace them")
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
    n_shards = manifest["n_shards"]
    listed = {s["name"] for s in manifest["shards"]}
    mine = [s for s in range(n_shards) if s % n_parts == index]
    todo = [s for s in mine if shard_name(s) not in listed]
    if not todo:
        complete = len(manifest["shards"]) == n_shards
        log(f"{folder}: {'set complete' if complete else f'part {index}/{n_parts} complete'}, nothing to do")
        return SetSummary(folder, 0, len(mine), complete, manifest)

    _remove_temporaries(folder, todo)
    state = prepare()
    bar = tqdm(total=sum(shard_count(s) for s in todo), unit=unit, desc=f"{folder.name}", disable=not progress,
               smoothing=0.05)
    try:
        for entry in map_shards(write_shard, state, todo, max(1, min(workers, len(todo)))):
            manifest = add_shard(folder, entry)
            bar.update(entry["count"])
    except KeyboardInterrupt:
        raise ShardSetError(f"{folder}: interrupted; complete shards are kept, run the same command to resume") \
            from None
    finally:
        bar.close()
    complete = len(manifest["shards"]) == n_shards
    if complete:
        _remove_temporaries(folder, range(n_shards))
    return SetSummary(folder, len(todo), len(mine) - len(todo), complete, manifest)


def _drop_damaged(folder: Path, manifest: dict) -> dict:
    """A listed shard whose file is gone or has the wrong size is delisted, to be written again."""
    kept = [s for s in manifest["shards"]
            if (folder / s["name"]).is_file() and (folder / s["name"]).stat().st_size == s["bytes"]]
    if len(kept) != len(manifest["shards"]):
        manifest = {**manifest, "shards": kept}
        atomic_write_bytes(folder / MANIFEST, dump_manifest(manifest))
    return manifest


def _remove_set(folder: Path) -> None:
    for f in [*folder.glob("patches-*.tar"), *folder.glob("patches-*.tar.tmp-*"), folder / MANIFEST]:
        f.unlink(missing_ok=True)


def _remove_temporaries(folder: Path, shards) -> None:
    for s in shards:
        for tmp in folder.glob(f"{shard_name(s)}.tmp-*"):
            tmp.unlink(missing_ok=True)


def write_indexed_shard(folder: Path, shard: int, indices: range,
                        sample: Callable[[int], tuple[str, list[tuple[str, bytes]]]]) -> dict:
    """Write shard `shard` holding samples `indices` (`sample(i)` gives (key, [(ext, bytes), ...])); its entry."""
    name = shard_name(shard)
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
