"""Run `make demo`'s script for several seeds and tabulate its numbers, its spread and its stage times.

Each seed runs in its own folder (runs/demo/seed-N; completed seeds are reused, so delete a folder to time it
again) one after the other, with the 1-minute load average before and after, since a busy machine stretches the
times, and the CPU time the seed's processes used, which a busy machine does not. The table is printed as
Markdown, for bench/results/demo.md.

    .venv/bin/python bench/demo_seeds.py                  # seeds 0, 1, 2
    .venv/bin/python bench/demo_seeds.py --seeds 0,1,2,3 --work runs/demo -- --data cifar10:~/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("conv1", "conv2")


def run_seed(seed: int, work: Path, extra: list[str]) -> dict:
    before, start = os.getloadavg()[0], time.time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, str(ROOT / "experiments" / "demo.py"), "--seed", str(seed), "--work", str(work),
                    *extra], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((work / f"seed-{seed}" / "demo.json").read_text())
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return {**summary, "seed": seed, "wall_s": time.time() - start, "cpu_s": cpu, "load": (before,
                                                                                             os.getloadavg()[0])}


def spread_rows(probed: list[dict]) -> tuple[list[str], list[str]]:
    """Mean, spread (max - min) and standard deviation across seeds of the gains and of both encoders' numbers;
    and per layer whether every seed's gain exceeds the largest of those spreads (the issue's acceptance)."""
    rows, verdicts = [], []
    spreads: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    for key in ("gain", "trained", "random"):
        cells = []
        for layer in LAYERS:
            values = [run[key][layer] for run in probed]
            mean, spread, std = statistics.mean(values), max(values) - min(values), statistics.stdev(values)
            spreads[layer] += [spread, std]
            cells.append(f"mean {mean:{'+' if key == 'gain' else ''}.1f}, spread {spread:.1f}, std {std:.1f}")
        rows.append(f"| {key} | " + " | ".join(cells) + " |" + " |" * 5)
    for layer in LAYERS:
        smallest, widest = min(run["gain"][layer] for run in probed), max(spreads[layer])
        verdicts.append(f"{layer}: smallest gain {smallest:+.1f} vs widest spread {widest:.1f}: "
                        f"{'exceeds' if smallest > widest else 'DOES NOT exceed'}")
    return rows, verdicts


def table(runs: list[dict]) -> list[str]:
    lines = ["| seed | " + " | ".join(f"{layer}: trained / random / gain" for layer in LAYERS)
             + " | train (s) | stages (s) | CPU now (s) | this run (s) | load before / after |",
             "| ---: |" + " --- |" * len(LAYERS) + " ---: | ---: | ---: | ---: | --- |"]
    for run in runs:
        cells = [f"{run['trained'][layer]:.1f} / {run['random'][layer]:.1f} / **{run['gain'][layer]:+.1f}**"
                 if "gain" in run else "not probed" for layer in LAYERS]
        train = sum(wall for name, wall in run["stage_s"].items() if name.startswith("train-"))
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + f" | {train:.0f} | {sum(run['stage_s'].values()):.0f}"
                     f" | {run['cpu_s']:.0f} | {run['wall_s']:.0f} | {run['load'][0]:.1f} / {run['load'][1]:.1f} |")
    probed = [run for run in runs if "gain" in run]
    if len(probed) > 1:
        rows, verdicts = spread_rows(probed)
        lines += rows + [""] + [f"- {line}" for line in verdicts]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("extra", nargs="*", help="after --: more arguments for experiments/demo.py")
    args = ap.parse_args()
    runs = [run_seed(int(seed), args.work, args.extra) for seed in args.seeds.split(",")]
    # stages: the sum of the stage times as first measured (reused stages keep theirs); CPU now and this run: what
    # this command spent (a reused stage costs nothing: delete a seed's folder to time all of it)
    commits = sorted({run["commit"] for run in runs})
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
          f"commit {', '.join(commits)}; {time.strftime('%Y-%m-%d')}\n")
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
