"""`pipeline render`: plan the shards of a set, render the missing ones of this part, list each in the manifest.

Sample i is a pure function of (configuration, sources, seed, i), and a shard only appears under its final name
when complete, so a render can be split into parts, run by any number of workers, killed and resumed, and the set
comes out byte-identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.augment import sample_params
from pipeline.config import RenderConfig
from pipeline.render_patch import SourcePyramid, encode, render
from pipeline.shard_format import new_manifest, sample_key
from pipeline.shard_writer import (
    SetSummary,
    check_part,
    config_differences,
    open_set,
    worker_state,
    write_indexed_shard,
    write_part,
)
from pipeline.sources import SourceImage, default_pool, discover_sources, select_sources


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def default_min_side(size: int) -> int:
    """Smallest usable source side: beyond a 4x upscale of the whole image a patch holds no detail."""
    return max(8, size // 4)


def render_set(out_dir: str | Path, config: RenderConfig, sources: list[str | Path] | None = None, n_src: int = 1,
               workers: int = 1, part: tuple[int, int] = (0, 1), force: bool = False, progress: bool = False,
               min_src_side: int | None = None, skip_bad: bool = False, log=print) -> SetSummary:
    """Render (or resume) part `part` = (I, N) of the set into `out_dir`."""
    check_part(part)
    candidates = default_pool() if sources is None else discover_sources(sources)
    min_side = default_min_side(config.size) if min_src_side is None else min_src_side
    chosen = select_sources(candidates, n_src, config.seed, min_side, skip_bad=skip_bad, warn=log)
    if sources is None:  # the embedded pool: its file names, not where this machine installed them
        for s in chosen:
            s.path = Path(s.path).name
    folder = Path(out_dir)
    manifest = open_set(folder, _fresh_manifest(config, chosen), _differences, force, log)

    def prepare() -> _WorkerState:
        return _WorkerState(config, [SourcePyramid(s.rgb) for s in chosen], [(s.width, s.height) for s in chosen],
                            folder)

    return write_part(folder, manifest, part, lambda s: len(config.shard_range(s)), prepare=prepare,
                      write_shard=render_shard, workers=workers, progress=progress, unit="patch", log=log)


def _fresh_manifest(config: RenderConfig, chosen: list[SourceImage]) -> dict:
    return new_manifest(config.to_dict(), config.n_patches, config.n_shards,
                        sources=[s.manifest_entry() for s in chosen])


def _differences(old: dict, new: dict) -> list[str]:
    diff = config_differences(old, new)
    if not diff and [s["sha256"] for s in old["sources"]] != [s["sha256"] for s in new["sources"]]:
        diff.append("different source images")
    return diff


@dataclass
class _WorkerState:
    config: RenderConfig
    pyramids: list[SourcePyramid]
    sizes: list[tuple[int, int]]
    folder: Path


def render_shard(shard: int) -> dict:
    """Render one shard in this process and return its manifest entry."""
    st: _WorkerState = worker_state()
    cfg = st.config

    def sample(i: int) -> tuple[str, list[tuple[str, bytes]]]:
        params = sample_params(cfg, i, st.sizes)
        image = encode(render(st.pyramids, params, cfg.size), cfg.format, cfg.quality)
        meta = json.dumps({"index": i, **params.provenance()}, separators=(",", ":"), sort_keys=True)
        return sample_key(i), [(cfg.format, image), ("json", meta.encode())]

    return write_indexed_shard(st.folder, shard, cfg.shard_range(shard), sample)
