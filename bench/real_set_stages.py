"""Time each stage of one real-set loader worker's path (``train/data/real_sets.py`` ``load_square``) beside the shard
reader's decode, on the JPEGs of a folder: median ms per image, one thread, stages timed in turn on each image so
that load on a shared machine falls on all of them alike. Used for ``bench/results/real-set-loader.md``.

    PYTHONPATH=$PWD .venv/bin/python bench/real_set_stages.py /tmp/inet/train --size 256
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.shard_reader import decode_image  # noqa: E402
from pipeline.sources import decode_rgb, has_image_suffix  # noqa: E402
from train.data.real_sets import load_square, to_square  # noqa: E402


def _pillow_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def stages(datas: list[bytes], paths: list[Path], size: int) -> dict[str, Callable[[int], object]]:
    """Stage name -> a function of the image's index."""
    rgbs = [decode_rgb(d, "image", size)[0] for d in datas]
    squares = [to_square(r, size) for r in rgbs]
    cv2_rgb = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    return {
        "file read (page cache)": lambda i: paths[i].read_bytes(),
        "shard reader decode_image (OpenCV BGR + cvtColor)": lambda i: decode_image(datas[i]),
        "Pillow open + load": lambda i: _pillow_decode(datas[i]),
        "OpenCV imdecode to RGB": lambda i: cv2.imdecode(np.frombuffer(datas[i], np.uint8), cv2_rgb),
        f"decode_rgb(min_side={size})": lambda i: decode_rgb(datas[i], "image", size),
        "to_square (centre crop, resize)": lambda i: to_square(rgbs[i], size),
        "HWC -> CHW, torch permute().contiguous()": lambda i: torch.from_numpy(squares[i]).permute(2, 0, 1)
        .contiguous(),
        "HWC -> CHW, numpy ascontiguousarray": lambda i: np.ascontiguousarray(squares[i].transpose(2, 0, 1)),
        f"load_square({size}): decode, square, CHW": lambda i: load_square(datas[i], "image", size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a folder of JPEGs (searched recursively)")
    ap.add_argument("--size", type=int, default=256, help="the loader scale (px)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    paths = sorted(p for p in args.folder.rglob("*") if p.is_file() and has_image_suffix(p))
    if not paths:
        raise SystemExit(f"{args.folder}: no images")
    datas = [p.read_bytes() for p in paths]
    timed = stages(datas, paths, args.size)
    spent: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):
        for i in range(len(datas)):
            for name, stage in timed.items():
                start = time.perf_counter()
                stage(i)
                spent[name].append(time.perf_counter() - start)
    print(f"| stage ({len(paths)} images, {args.size} px) | median ms |\n| --- | ---: |")
    for name, seconds in spent.items():
        print(f"| {name} | {np.median(seconds) * 1e3:.3f} |")


if __name__ == "__main__":
    main()
