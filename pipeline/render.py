"""`pipeline render`: plan the shards of a set, render the missing ones of this part, list each in the manifest.

Sample i is a pure function of (configuration, sources, seed, i), and a shard only appears under its final name
when complete, so a render can be split into parts, run by any number of workers, killed and resumed, and the set
comes out byte-identical.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline import FORMAT_VERSION
from pipeline.augment import sample_params
from pipeline.config import RenderConfig
from pipeline.errors import ShardSetError
from pipeline.render_patch import SourcePyramid, encode, render
from pipeline.shardio import (
    MANIFEST,
    add_shard,
    atomic_write_bytes,
    dump_manifest,
    manifest_lock,
    read_manifest,
    sample_key,
    shard_name,
    write_tar,
)
from pipeline.sources import SourceImage, default_pool, discover_sources, select_sources


@dataclass
class RenderSummary:
    folder: Path
    rendered: int  # shards rendered by this call
    already: int  # shards of this part that were complete before
    complete: bool  # every shard of the set is listed
    manifest: dict


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def default_min_side(size: int) -> int:
    """Smallest usable source side: beyond a 4x upscale of the whole image a patch holds no detail."""
    return max(8, size // 4)


def render_set(out_dir: str | Path, config: RenderConfig, sources: list[str | Path] | None = None, n_src: int = 1,
               workers: int = 1, part: tuple[int, int] = (0, 1), force: bool = False, progress: bool = False,
               min_src_side: int | None = None, skip_bad: bool = False, log=print) -> RenderSummary:
    """Render (or resume) part `part` = (I, N) of the set into `out_dir`."""
    index, n_parts = part
    if not 0 <= index < n_parts:
        raise ShardSetError(f"--part {index}/{n_parts}: I must be in 0..{n_parts - 1}")
    candidates = default_pool() if sources is None else discover_sources(sources)
    min_side = default_min_side(config.size) if min_src_side is None else min_src_side
    chosen = select_sources(candidates, n_src, config.seed, min_side, skip_bad=skip_bad, warn=log)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _open_manifest(folder, config, chosen, force, log)

    listed = {s["name"] for s in manifest["shards"]}
    mine = [s for s in range(config.n_shards) if s % n_parts == index]
    todo = [s for s in mine if shard_name(s) not in listed]
    if not todo:
        complete = len(manifest["shards"]) == config.n_shards
        log(f"{folder}: {'set complete' if complete else f'part {index}/{n_parts} complete'}, nothing to do")
        return RenderSummary(folder, 0, len(mine), complete, manifest)

    _remove_temporaries(folder, todo)
    pyramids = [SourcePyramid(s.rgb) for s in chosen]
    sizes = [(s.width, s.height) for s in chosen]
    state = _WorkerState(config, pyramids, sizes, folder)
    n_samples = sum(len(config.shard_range(s)) for s in todo)
    bar = tqdm(total=n_samples, unit="patch", desc=f"render {folder.name}", disable=not progress, smoothing=0.05)
    workers = max(1, min(workers, len(todo)))
    try:
        for entry in _run(state, todo, workers):
            manifest = add_shard(folder, entry)
            bar.update(entry["count"])
    except KeyboardInterrupt:
        bar.close()
        raise ShardSetError(f"{folder}: interrupted; complete shards are kept, run the same command to resume") \
            from None
    bar.close()
    complete = len(manifest["shards"]) == config.n_shards
    if complete:
        _remove_temporaries(folder, range(config.n_shards))
    return RenderSummary(folder, len(todo), len(mine) - len(todo), complete, manifest)


def _open_manifest(folder: Path, config: RenderConfig, chosen: list[SourceImage], force: bool, log) -> dict:
    """Create the manifest, or check that the folder holds this very set (then resume it)."""
    fresh = {
        "format": "single-image-ssl/shards",
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "sources": [s.manifest_entry() for s in chosen],
        "n_samples": config.n_patches,
        "n_shards": config.n_shards,
        "shards": [],
    }
    with manifest_lock(folder):
        existing = read_manifest(folder)
        if existing is not None:
            diff = _differences(existing, fresh)
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


def _differences(old: dict, new: dict) -> list[str]:
    diff = [f"{k}: {old['config'].get(k)!r} here, {v!r} asked" for k, v in new["config"].items()
            if old["config"].get(k) != v]
    if [s["sha256"] for s in old["sources"]] != [s["sha256"] for s in new["sources"]]:
        diff.append("different source images")
    return diff


def _drop_damaged(folder: Path, manifest: dict) -> dict:
    """A listed shard whose file is gone or has the wrong size is delisted, to be rendered again."""
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


@dataclass
class _WorkerState:
    config: RenderConfig
    pyramids: list[SourcePyramid]
    sizes: list[tuple[int, int]]
    folder: Path


_STATE: _WorkerState | None = None


def _init_worker(state: _WorkerState | None) -> None:
    global _STATE
    if state is not None:
        _STATE = state


def _run(state: _WorkerState, todo: list[int], workers: int):
    if workers == 1:
        _init_worker(state)
        for s in todo:
            yield render_shard(s)
        return
    # fork shares the pyramids copy-on-write; under spawn they are pickled once per worker
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    global _STATE
    _STATE = state
    with ctx.Pool(workers, initializer=_init_worker, initargs=(None if method == "fork" else state,)) as pool:
        try:
            yield from pool.imap_unordered(render_shard, todo)
        except BaseException:
            pool.terminate()
            raise


def render_shard(shard: int) -> dict:
    """Render one shard in this process and return its manifest entry."""
    st = _STATE
    cfg = st.config
    indices = cfg.shard_range(shard)

    def samples():
        for i in indices:
            params = sample_params(cfg, i, st.sizes)
            image = encode(render(st.pyramids, params, cfg.size), cfg.format, cfg.quality)
            meta = json.dumps({"index": i, **params.provenance()}, separators=(",", ":"), sort_keys=True)
            yield sample_key(i), [(cfg.format, image), ("json", meta.encode())]

    name = shard_name(shard)
    info = write_tar(st.folder / name, samples())
    return {"name": name, "first": indices.start, "count": len(indices), **info}
