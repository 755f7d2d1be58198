"""Does rotation cost MonoGAN points because it rotates, or because it shrinks the crops? (Table 1, rows (f)-(j)).

The paper recipe rotates before cropping and keeps every crop inside the rotated source (no empty border). On a
wide, short source such as Image B (600 x 225) a large crop only fits when its angle is small, so turning rotation
on also moves the crop sizes down. This script separates the two effects:

- `sizes SRC` prints the distribution of crop sides (sqrt(w h), source pixels) with and without rotation, per angle
  band, from the render's own sampler.
- `render SRC OUT --set scale|jitter-scale` renders a control set: each sample's parameters are drawn exactly as
  for the set that adds rotation (rot-scale or all: same seed, same random stream, so the same crop box, flip and
  jitter), then the angle is set to 0. The control has rotation's crop sizes without rotating anything; trained
  and probed like the ablation rows, it sits between (f) and (h) (or (i) and (j)) wherever the size shift matters.

    .venv/bin/python bench/rotation_crop_size.py sizes ../shared/data/paper-images/animals.png
    .venv/bin/python bench/rotation_crop_size.py render ../shared/data/paper-images/animals.png \
        runs/exp/cifar-B-scale-rotsizes --set scale

The control's manifest records the config of the rotated set it borrows its boxes from, plus an `experiment` entry
saying that every angle was set to 0; each sample's own metadata holds the angle actually used (0).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline.render  # noqa: E402
from common.fileio import atomic_write_bytes  # noqa: E402
from pipeline.augment import PaperParams, sample_paper_params, sample_rng  # noqa: E402
from pipeline.config import RenderConfig  # noqa: E402
from pipeline.shard_format import MANIFEST, dump_manifest, read_manifest  # noqa: E402
from pipeline.sources import load_source  # noqa: E402

EXPERIMENT = "crop boxes, flips and jitter drawn as for this config (with rotation); every angle then set to 0"
# The control for each ablation row that has scale but no rotation: the row it is compared with adds rotation.
CONTROLS = {"scale": dict(jitter=False), "jitter-scale": dict()}


def crop_sides(width: int, height: int, config: RenderConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    params = [sample_paper_params(sample_rng(config.seed, i), 0, width, height, config) for i in range(n)]
    return np.array([np.sqrt(p.w * p.h) for p in params]), np.array([abs(p.angle) for p in params])


def print_sizes(src: Path, n: int, size: int) -> None:
    image = load_source(src)
    width, height = image.width, image.height
    print(f"{src.name}: {width} x {height}; crop side sqrt(w h) in source pixels over {n:,} samples, S = {size}")
    print("| set | p10 | p25 | median | p75 | p90 | mean |")
    print("|---|---|---|---|---|---|---|")
    bands = None
    for name, overrides in [("scale", dict(rotate=False)), ("rot-scale", dict()),
                            ("rotation (no scale)", dict(scale=False))]:
        config = RenderConfig(n_patches=n, size=size, jitter=False, **overrides)
        sides, angles = crop_sides(width, height, config, n)
        q = np.percentile(sides, [10, 25, 50, 75, 90])
        print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in q) + f" | {sides.mean():.0f} |")
        if name == "rot-scale":
            bands = [(lo, hi, np.median(sides[(angles >= lo) & (angles < hi)])) for lo, hi in
                     [(0, 10), (10, 20), (20, 35)]]
    print("\nrot-scale, median crop side by |angle|: "
          + ", ".join(f"{lo}-{hi} deg {m:.0f} px" for lo, hi, m in bands))


def render_control(src: Path, out: Path, which: str, n_patches: int, size: int, workers: int) -> None:
    config = RenderConfig(n_patches=n_patches, size=size, **CONTROLS[which])
    draw = pipeline.render.sample_params

    def unrotated(cfg: RenderConfig, index: int, sizes: list[tuple[int, int]]) -> PaperParams:
        # A box that fits inside the source at its angle also fits at angle 0: its axis-aligned extents only shrink.
        return dataclasses.replace(draw(cfg, index, sizes), angle=0.0)

    pipeline.render.sample_params = unrotated  # the forked render workers inherit it
    try:
        summary = pipeline.render.render_set(out, config, sources=[src], workers=workers, progress=True)
    finally:
        pipeline.render.sample_params = draw
    manifest = read_manifest(out)
    manifest["experiment"] = EXPERIMENT
    atomic_write_bytes(out / MANIFEST, dump_manifest(manifest))
    print(summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sizes = sub.add_parser("sizes")
    sizes.add_argument("src", type=Path)
    sizes.add_argument("--n", type=int, default=20_000)
    sizes.add_argument("--size", type=int, default=32)
    render = sub.add_parser("render")
    render.add_argument("src", type=Path)
    render.add_argument("out", type=Path)
    render.add_argument("--set", choices=sorted(CONTROLS), required=True)
    render.add_argument("--n-patches", type=int, default=10_000)
    render.add_argument("--size", type=int, default=32)
    render.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "sizes":
        print_sizes(args.src, args.n, args.size)
    else:
        render_control(args.src, args.out, args.set, args.n_patches, args.size, args.workers)


if __name__ == "__main__":
    main()
