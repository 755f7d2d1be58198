"""Render throughput: the naive torchvision pipeline vs ours, on one core, in the same process.

    python bench/render.py [--k 300] [--src IMAGE] [--full 50000 --workers 2]

(a) reference: RandomRotation(35) of the whole image, RandomResizedCrop(256, scale=(1e-3, 1)), RandomHorizontalFlip,
    ColorJitter(0.4, 0.4, 0.4, 0.1), JPEG encode -- what one would write first with torchvision;
(b) ours: the real shard path (parameter sampling, one warp from the pyramid, colour matrix, JPEG, tar, sha256, fsync);
(c) the floor: JPEG encoding alone.
Prints ms/patch for each and, as its last line, `ratio: R` = (a)/(b). With --full N it also times a whole render of
N patches with --workers processes and extrapolates to the 1,281,167 patches of the ImageNet-scale set.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.config import IMAGENET_SIZE, RenderConfig
from pipeline.render import render_set
from pipeline.sources import default_pool, load_source

PAPER_IMAGE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "paper-images" / "ameyoko.jpg"


def default_source() -> tuple[Path, str]:
    if PAPER_IMAGE.is_file():
        return PAPER_IMAGE.resolve(), "Image A (ameyoko.jpg, 2560x1920)"
    # No paper image: the embedded default upscaled to a comparable size, so the naive pipeline pays its real cost
    src = load_source(default_pool()[0])
    big = cv2.resize(src.rgb, (2560, 2560), interpolation=cv2.INTER_CUBIC)
    path = Path(tempfile.mkdtemp()) / "default-upscaled.png"
    Image.fromarray(big).save(path)
    return path, "embedded default upscaled to 2560x2560"


def time_reference(image: Image.Image, k: int, size: int) -> float:
    import torchvision.transforms as T

    tf = T.Compose([T.RandomRotation(35), T.RandomResizedCrop(size, scale=(1e-3, 1.0)), T.RandomHorizontalFlip(),
                    T.ColorJitter(0.4, 0.4, 0.4, 0.1)])
    t = time.perf_counter()
    for _ in range(k):
        buf = io.BytesIO()
        tf(image).save(buf, format="JPEG", quality=90)
    return (time.perf_counter() - t) / k * 1e3


def time_ours(src: Path, k: int, size: int) -> float:
    out = Path(tempfile.mkdtemp())
    try:
        cfg = RenderConfig(n_patches=k, size=size, shard_size=k)
        # load and pyramid once, as a render does per process, then time the shard path alone
        from pipeline import render as r
        from pipeline.render_patch import SourcePyramid
        from pipeline.shard_writer import install_worker_state

        s = load_source(src)
        install_worker_state(r._WorkerState(cfg, [SourcePyramid(s.rgb)], [(s.width, s.height)], out))
        t = time.perf_counter()
        r.render_shard(0)
        return (time.perf_counter() - t) / k * 1e3
    finally:
        shutil.rmtree(out)


def time_jpeg_floor(src: Path, k: int, size: int) -> float:
    rgb = load_source(src).rgb
    patches = [np.ascontiguousarray(rgb[i * 7 % (rgb.shape[0] - size):][:size, :size]) for i in range(16)]
    t = time.perf_counter()
    for i in range(k):
        cv2.imencode(".jpg", patches[i % 16], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return (time.perf_counter() - t) / k * 1e3


def time_full(src: Path, n: int, size: int, workers: int) -> float:
    out = Path(tempfile.mkdtemp())
    try:
        t = time.perf_counter()
        render_set(out / "set", RenderConfig(n_patches=n, size=size, shard_size=min(10_000, n)), sources=[src],
                   workers=workers, progress=True)
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=300, help="patches per timed pipeline")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--src", type=Path, default=None)
    ap.add_argument("--full", type=int, default=0, help="also time a whole render of this many patches")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    src, label = (args.src, str(args.src)) if args.src else default_source()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"source: {label}; S={args.size}; K={args.k}; one core; cpu: {os.cpu_count()} logical")
    image = Image.open(src).convert("RGB")
    ref = time_reference(image, args.k, args.size)
    ours = time_ours(src, args.k, args.size)
    floor = time_jpeg_floor(src, args.k, args.size)
    print(f"(a) torchvision naive : {ref:8.3f} ms/patch")
    print(f"(b) ours, shard path  : {ours:8.3f} ms/patch")
    print(f"(c) JPEG encode floor : {floor:8.3f} ms/patch")
    if args.full:
        secs = time_full(src, args.full, args.size, args.workers)
        per = secs / args.full
        print(f"full render: {args.full} patches with {args.workers} workers in {secs:.1f} s "
              f"({args.full / secs:.0f} patches/s); "
              f"extrapolated {IMAGENET_SIZE:,} patches: {per * IMAGENET_SIZE / 60:.1f} min")
    print(f"ratio: {ref / ours:.1f}")


if __name__ == "__main__":
    main()
