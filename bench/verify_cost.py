"""What checking shards against their manifest costs the reader: samples/s with and without verification, one run.

`pipeline.shard_reader.open_shards` checks each shard against the manifest (`verify=True`, the default): a local
shard is hashed as it streams and compared at its end; a remote one (`--http`) is spooled whole, its byte count and
sha256 checked, then read. This times the reader both ways on the same set in one process, alternating the two so
that load from other jobs falls on both alike, and prints the ratio of the medians (goal: >= 0.9). Sets: 32 px PNG
patches (CIFAR scale) and 256 px JPEG patches (ImageNet scale), rendered into a temporary folder (or `--sets-dir`,
kept and reused), read as the trainers read them (decoded to tensors); `raw` (no decoding: the reader's bare bytes,
the worst case for the check's share) is timed too. With `--http`, each set is also served by a local http server
(`python -m http.server` in a subprocess, on 127.0.0.1) and read over it.

With `--compare-with CHECKOUT`, the verified reader of another checkout (an earlier commit's, in a git worktree)
is timed against this one's instead, each in its own worker process, alternately: before/after figures.

    .venv/bin/python bench/verify_cost.py
    .venv/bin/python bench/verify_cost.py --set shards/mono-A --repeats 3   # an existing set
    .venv/bin/python bench/verify_cost.py --sets-dir /tmp/vc --sizes 32 --decodes torch --http --repeats 3
    git worktree add --detach /tmp/before HEAD~1
    .venv/bin/python bench/verify_cost.py --sets-dir /tmp/vc --http --compare-with /tmp/before   # before/after
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a --worker imports the reader of the checkout it is given (an earlier commit's, for --compare-with)
sys.path.insert(0, sys.argv[sys.argv.index("--worker") + 1] if "--worker" in sys.argv else str(ROOT))

import torch  # noqa: E402

from pipeline.config import RenderConfig  # noqa: E402
from pipeline.render import render_set  # noqa: E402
from pipeline.shard_reader import open_shards  # noqa: E402


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its children once reaped (a `curl` the reader ran)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CLOCKS = {"wall": time.perf_counter, "cpu": cpu_seconds}
CLOCK = "wall"  # set by --clock: cpu is steadier on a machine that other jobs load


def samples_per_s(location: str, verify: bool, decode: str, limit: int | None) -> float:
    clock = CLOCKS[CLOCK]
    start, n = clock(), 0
    for _ in open_shards(location, decode=decode, verify=verify, split_by_node=False, split_by_worker=False):
        n += 1
        if limit and n >= limit:
            break
    return n / (clock() - start)


def compare(location: str, decode: str, repeats: int, limit: int | None) -> tuple[float, float]:
    samples_per_s(location, True, decode, limit)  # warm the page cache and the decoders
    timed: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for verify in ((True, False) if r % 2 == 0 else (False, True)):
            timed[verify].append(samples_per_s(location, verify, decode, limit))
    return statistics.median(timed[True]), statistics.median(timed[False])


def worker() -> None:
    """Answer timing requests (JSON lines: location, verify, decode, limit) with samples/s, one per line."""
    for line in sys.stdin:
        location, verify, decode, limit = json.loads(line)
        print(json.dumps(samples_per_s(location, verify, decode, limit)), flush=True)


class Reader:
    """A --worker process timing the reader of the checkout at `root`."""

    def __init__(self, root: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", root, "--clock", CLOCK],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=root)

    def time(self, location: str, decode: str, limit: int | None, verify: bool = True) -> float:
        self.proc.stdin.write(json.dumps([location, verify, decode, limit]) + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def before_after(old: Reader, new: Reader, location: str, decode: str, repeats: int,
                 limit: int | None) -> tuple[float, float]:
    """Medians of the verified rate of the earlier checkout's reader and of this one's, alternated."""
    for reader in (old, new):
        reader.time(location, decode, limit)  # warm the page cache, the decoders and the imports
    timed: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(repeats):
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
            timed[which].append((old if which == "old" else new).time(location, decode, limit))
    return statistics.median(timed["old"]), statistics.median(timed["new"])


SETS = {32: (8000, "png"), 256: (800, "jpg")}  # side: (patches, format); 4 shards each


@contextlib.contextmanager
def served(folder: str) -> Iterator[str]:
    """`folder` served over http on 127.0.0.1 by a separate process (the reader's process only reads)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def rendered_sets(root: str, sizes: list[int], scale: float) -> dict[str, str]:
    """name -> folder of each set asked for, rendered under `root` unless already there."""
    sets = {}
    for size in sizes:
        n, fmt = SETS[size]
        n = max(4, int(n * scale))
        folder = str(Path(root) / f"{size}-{fmt}-{n}")
        if not (Path(folder) / "manifest.json").exists():
            render_set(folder, RenderConfig(n_patches=n, size=size, shard_size=-(-n // 4), format=fmt),
                       workers=min(4, os.cpu_count() or 1), log=lambda *a, **k: None)
        sets[f"{n} x {size} px {fmt}"] = folder
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default=None, help="an existing rendered set (default: render two temporary ones)")
    ap.add_argument("--sets-dir", default=None, help="render the sets here, or reuse those already there")
    ap.add_argument("--sizes", default="32,256", help="the sets to time, by patch side (32, 256)")
    ap.add_argument("--scale", type=float, default=1.0, help="times the sets' default sample counts (8000, 800)")
    ap.add_argument("--decodes", default="torch,raw", help="torch (as trainers read), raw (bytes only), or both")
    ap.add_argument("--http", action="store_true", help="also read each set over http from a local server")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="samples read per timing (default: the whole set)")
    ap.add_argument("--compare-with", default=None, metavar="CHECKOUT",
                    help="time the verified reader of another checkout (e.g. a `git worktree` of an earlier commit) "
                         "against this one's, alternately, each in its own process")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="samples per wall-clock second, or per CPU second of the reading process (and its children)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    # one intra-op thread, as in a DataLoader worker (torch sets it there): idle threads spinning on a loaded machine
    # made the decoded rates vary fourfold from run to run
    torch.set_num_threads(1)
    if args.worker:
        return worker()
    how = "two processes (before, after)" if args.compare_with else "one process"
    spool = os.environ.get("SINGLE_IMAGE_SSL_SPOOL_MEMORY")
    spool = f"; SINGLE_IMAGE_SSL_SPOOL_MEMORY={spool}" if spool else ""
    print(f"# {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}; medians of {args.repeats} alternating "
          f"runs, {how}, no DataLoader workers, samples per {args.clock} second{spool}")
    readers = (Reader(args.compare_with), Reader(str(ROOT))) if args.compare_with else ()
    with tempfile.TemporaryDirectory() as tmp:
        if args.set:
            sets = {args.set: args.set}
        else:
            sets = rendered_sets(args.sets_dir or tmp, [int(s) for s in args.sizes.split(",")], args.scale)
        for name, folder in sets.items():
            with contextlib.ExitStack() as stack:
                where = {"file": folder}
                if args.http:
                    where["http"] = stack.enter_context(served(folder))
                for transport, location in where.items():
                    for decode in args.decodes.split(","):
                        if args.compare_with:
                            old, new = readers
                            before, after = before_after(old, new, location, decode, args.repeats, args.limit)
                            print(f"{name:22s} {transport:4s} decode={decode:5s}  verified: before {before:9.1f} "
                                  f"samples/s  after {after:9.1f} samples/s  ratio {after / before:.3f}", flush=True)
                            continue
                        with_hash, without = compare(location, decode, args.repeats, args.limit)
                        print(f"{name:22s} {transport:4s} decode={decode:5s}  verified {with_hash:9.1f} samples/s  "
                              f"unverified {without:9.1f} samples/s  ratio {with_hash / without:.3f}", flush=True)
    for reader in readers:
        reader.close()


if __name__ == "__main__":
    main()
