"""The real check of `probe linear`: the random-initialisation baseline of the CIFAR encoder on CIFAR-10.

Runs `probe linear random:cifar --data cifar10-jpg:../shared/data/cifar10-jpg` (optionally with protocol
variants, to investigate differences) as subprocesses, one at a time, and prints a Markdown table of the
measured top-1 per layer against the paper's Table 3 "Random" row, with wall time and the machine's load.

    .venv/bin/python bench/probe_random_cifar10.py --out runs/bench-probe            # the protocol, seed 0
    .venv/bin/python bench/probe_random_cifar10.py --out runs/bench-probe --variants seeds,normalize,leaky

Variants that `probe linear` has no option for (calibrated BatchNorm, PyTorch's default init) are in
bench/probe_random_ablations.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = f"cifar10-jpg:{ROOT.parent / 'shared' / 'data' / 'cifar10-jpg'}"

# name -> extra `probe linear` arguments; "protocol" is the paper's protocol as `probe linear` runs it
VARIANTS = {
    "protocol": [],
    "seeds": [["--seed", "1"], ["--seed", "2"]],
    "normalize": [["--normalize", "imagenet"], ["--normalize", "none"]],
    "leaky": [["random:cifar:leaky_relu=true"]],  # the MonoGAN encoder as train/methods/monogan.py builds it
    "weight-decay": [["--weight-decay", "5e-4"]],
    "batch": [["--batch-size", "64"]],
}


def run_variant(extra: list[str], out: Path, workers: int, threads: int | None) -> dict:
    encoder = next((a for a in extra if a.startswith("random:")), "random:cifar")
    options = [a for a in extra if not a.startswith("random:")]
    command = [sys.executable, "-m", "probe.cli", "linear", encoder, "--data", DATA, "--out", str(out),
               "--workers", str(workers), "--no-progress", *options]
    if threads:
        command += ["--threads", str(threads)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    return {"command": " ".join(command[2:]), "wall_s": wall, "load_before": load_before,
            "load_after": os.getloadavg(), "results": results}


def markdown(rows: list[tuple[str, dict]]) -> str:
    sys.path.insert(0, str(ROOT))
    from probe.paper import paper_parts

    part = next(p for p in paper_parts() if p.table_id == "table3" and p.dataset == "cifar10")
    paper = dict(zip(part.columns, part.find("random").values, strict=True))
    header = " | ".join(f"{c} (paper {paper[c]})" for c in part.columns)
    lines = [f"| run | {header} | wall | load 1-min before/after |",
             "| --- |" + " ---: |" * len(part.columns) + " ---: | --- |"]
    for name, run in rows:
        layers = run["results"]["layers"]
        cells = [f"{layers[c]['top1']:.1f} ({layers[c]['top1'] - paper[c]:+.1f})" for c in part.columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {run['wall_s'] / 60:.1f} min | "
                     f"{run['load_before'][0]:.1f} / {run['load_after'][0]:.1f} |")
    env = rows[0][1]["results"]["environment"]
    lines += ["", f"Machine: {env['processor']}, {env['cpu_count']} cores, {env['torch_threads']} torch "
                  f"threads, torch {env['torch']}, device {env['device']}."]
    lines += [f"- {name}: `{run['command']}`" for name, run in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-probe-random-cifar10")
    parser.add_argument("--variants", default="",
                        help=f"comma-separated, from {', '.join(list(VARIANTS)[1:])}")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="passed on to `probe linear --threads`")
    args = parser.parse_args()
    rows = [("protocol (seed 0)", run_variant([], args.out / "protocol", args.workers, args.threads))]
    for group in filter(None, args.variants.split(",")):
        for extra in VARIANTS[group]:
            name = " ".join(extra)
            folder = args.out / name.replace(" ", "_").replace(":", "-")
            rows.append((name, run_variant(extra, folder, args.workers, args.threads)))
    print(markdown(rows))


if __name__ == "__main__":
    main()
