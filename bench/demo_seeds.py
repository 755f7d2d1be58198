"""Run `make demo`'s script for several seeds and tabulate its numbers, its spread and its stage times.

Each seed runs in its own folder (runs/demo/seed-N; completed seeds are reused, so delete a folder to time it
again) one after the other, with the 1-minute load average before and after, since a busy machine stretches the
times. The table is printed as Markdown, for bench/results/demo.md.

    .venv/bin/python bench/demo_seeds.py                  # seeds 0, 1, 2
    .venv/bin/python bench/demo_seeds.py --seeds 0,1,2,3 --work runs/demo -- --data cifar10:~/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("conv1", "conv2")


def run_seed(seed: int, work: Path, extra: list[str]) -> dict:
    before = os.getloadavg()[0]
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "experiments" / "demo.py"), "--seed", str(seed), "--work", str(work),
                    *extra], check=True)
    summary = json.loads((work / f"seed-{seed}" / "demo.json").read_text())
    return {**summary, "seed": seed, "wall_s": time.time() - start, "load": (before, os.getloadavg()[0])}


def table(runs: list[dict]) -> list[str]:
    lines = ["| seed | " + " | ".join(f"{layer}: trained / random / gain" for layer in LAYERS)
             + " | train (s) | steps 1-4 (s) | load before / after |",
             "| ---: |" + " --- |" * len(LAYERS) + " ---: | ---: | --- |"]
    for run in runs:
        cells = [f"{run['trained'][layer]:.1f} / {run['random'][layer]:.1f} / **{run['gain'][layer]:+.1f}**"
                 if "gain" in run else "not probed" for layer in LAYERS]
        train = sum(wall for name, wall in run["stage_s"].items() if name.startswith("train-"))
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + f" | {train:.0f} | {run['wall_s']:.0f} | "
                     f"{run['load'][0]:.1f} / {run['load'][1]:.1f} |")
    probed = [run for run in runs if "gain" in run]
    if len(probed) > 1:
        for key in ("gain", "trained", "random"):
            cells = []
            for layer in LAYERS:
                values = [run[key][layer] for run in probed]
                mean = f"{statistics.mean(values):+.1f}" if key == "gain" else f"{statistics.mean(values):.1f}"
                cells.append(f"mean {mean}, spread (max - min) {max(values) - min(values):.1f}")
            lines.append(f"| {key} | " + " | ".join(cells) + " | | | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("extra", nargs="*", help="after --: more arguments for experiments/demo.py")
    args = ap.parse_args()
    runs = [run_seed(int(seed), args.work, args.extra) for seed in args.seeds.split(",")]
    # steps 1-4: the whole demo command as a user waits for it (a reused seed's is seconds: delete its folder)
    commits = sorted({run["commit"] for run in runs})
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
          f"commit {', '.join(commits)}; {time.strftime('%Y-%m-%d')}\n")
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
