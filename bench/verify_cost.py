"""What hashing shards while streaming them costs the reader: samples/s with and without verification, one run.

`pipeline.shards.open_shards` hashes each shard's bytes as they stream past and compares them with the manifest's
sha256 at the shard's end (`verify=True`, the default). This times the reader both ways on the same set in one
process, alternating the two so that load from other jobs falls on both alike, and prints the ratio of the medians
(goal: >= 0.9). Sets: 32 px PNG patches (CIFAR scale) and 256 px JPEG patches (ImageNet scale), rendered into a
temporary folder, read as the trainers read them (decoded to tensors); `raw` (no decoding: the reader's bare
bytes, the worst case for the hash's share) is timed too.

    .venv/bin/python bench/verify_cost.py
    .venv/bin/python bench/verify_cost.py --set shards/mono-A --repeats 3   # an existing set
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import RenderConfig  # noqa: E402
from pipeline.render import render_set  # noqa: E402
from pipeline.shards import open_shards  # noqa: E402


def samples_per_s(location: str, verify: bool, decode: str, limit: int | None) -> float:
    start, n = time.perf_counter(), 0
    for _ in open_shards(location, decode=decode, verify=verify, split_by_node=False, split_by_worker=False):
        n += 1
        if limit and n >= limit:
            break
    return n / (time.perf_counter() - start)


def compare(location: str, decode: str, repeats: int, limit: int | None) -> tuple[float, float]:
    samples_per_s(location, True, decode, limit)  # warm the page cache and the decoders
    timed: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for verify in ((True, False) if r % 2 == 0 else (False, True)):
            timed[verify].append(samples_per_s(location, verify, decode, limit))
    return statistics.median(timed[True]), statistics.median(timed[False])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default=None, help="an existing rendered set (default: render two temporary ones)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="samples read per timing (default: the whole set)")
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}; medians of {args.repeats} alternating "
          f"runs, one process, no DataLoader workers")
    with tempfile.TemporaryDirectory() as tmp:
        if args.set:
            sets = {args.set: args.set}
        else:
            sets = {}
            for size, n, fmt in ((32, 8000, "png"), (256, 800, "jpg")):
                folder = str(Path(tmp) / f"{size}-{fmt}")
                render_set(folder, RenderConfig(n_patches=n, size=size, shard_size=n // 4, format=fmt),
                           workers=min(4, os.cpu_count() or 1), log=lambda *a, **k: None)
                sets[f"{n} x {size} px {fmt}"] = folder
        for name, folder in sets.items():
            for decode in ("torch", "raw"):
                with_hash, without = compare(folder, decode, args.repeats, args.limit)
                print(f"{name:22s} decode={decode:5s}  verified {with_hash:9.1f} samples/s  unverified "
                      f"{without:9.1f} samples/s  ratio {with_hash / without:.3f}")


if __name__ == "__main__":
    main()
