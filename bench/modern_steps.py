"""Steps/s of `train METHOD` at `reproduce modern`'s quick settings, to size that preset (bench/results/modern.md).

Each method runs through the real command (data loading, batched view augmentation, the step, checkpoints) for
--steps steps; the rate is taken between its first and last metrics.jsonl lines, so start-up and the first window
are left out. Beside the wall rate it reads the process's CPU time at those two lines (/proc/PID/stat, every
thread; --workers 0 keeps the loading in that process), which says what a step costs whatever else the machine is
doing: on a shared machine the wall rate is the load's, the CPU rate the method's.

    python bench/modern_steps.py --data SHARDS [--methods simclr,byol,dino,mocov2] [--arch resnet18-cifar-w16]
        [--batch-size 128] [--steps 12] [--log-every 3] [--supervised-data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: fields 14 and 15 of the whole line


def time_method(method: str, data: str, arch: str, batch: int, steps: int, log_every: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"modern-steps-{method}-") as out:
        metrics = Path(out) / "metrics.jsonl"
        cmd = [str(BIN / "train"), method, data, "--arch", arch, "--batch-size", str(batch), "--max-steps",
               str(steps), "--log-every", str(log_every), "--workers", "0", "--device", "cpu", "--no-progress",
               "--ckpt-every", "0", "--out", out, *extra]
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        marks: list[tuple[int, float, float]] = []  # (step, wall time logged, CPU seconds when seen)
        while proc.poll() is None:
            lines = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
            steps_logged = [r for r in lines if "step" in r and "loss" in r]
            if len(steps_logged) > len(marks):
                try:
                    marks.append((steps_logged[-1]["step"], steps_logged[-1]["time"], cpu_seconds(proc.pid)))
                except FileNotFoundError:
                    break
            time.sleep(0.05)
        if proc.wait() != 0:
            raise SystemExit(f"{method}: {' '.join(cmd)} failed:\n{proc.stderr.read()[-2000:]}")
        total = time.time() - started
    (s0, t0, c0), (s1, t1, c1) = marks[0], marks[-1]
    return {"method": method, "arch": arch, "batch": batch, "steps": s1 - s0, "steps_per_s": (s1 - s0) / (t1 - t0),
            "cpu_s_per_step": (c1 - c0) / (s1 - s0), "total_s": total, "command": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a rendered set (or KIND:PATH) for the self-supervised methods")
    ap.add_argument("--supervised-data", default=None, help="a labelled set: also time `train supervised`")
    ap.add_argument("--methods", default="simclr,byol,dino,mocov2")
    ap.add_argument("--arch", default="resnet18-cifar-w16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=3)
    ap.add_argument("--extra", default="", help="more train options for every method, e.g. \"--local-crops 2\"")
    args = ap.parse_args()
    runs = [(m, args.data, args.extra.split()) for m in args.methods.split(",") if m]
    if args.supervised_data:
        runs.append(("supervised", args.supervised_data, ["--head-dim", "0"]))
    print(f"# load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs", flush=True)
    for method, data, extra in runs:
        r = time_method(method, data, args.arch, args.batch_size, args.steps, args.log_every, extra)
        print(f"{r['method']:<11} {r['arch']} batch {r['batch']}: {r['steps_per_s']:.3f} steps/s wall, "
              f"{r['cpu_s_per_step']:.2f} CPU-s/step over {r['steps']} steps (run {r['total_s']:.0f} s; load "
              f"{os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
