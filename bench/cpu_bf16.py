"""Training steps on the CPU in fp32 against bf16 autocast (`train --amp`), per method, in the same process.

Each method's step is timed on one batch held in memory (the loader taken out), channels_last as the trainer runs
it, alternating fp32 and bf16 rounds so that a change in the machine's load hits both; the best round of each is
kept. The ratio says what `--amp` gains on this CPU: CPUs with AVX512-BF16 or AMX run bf16 convolutions natively,
others emulate them and lose.

    .venv/bin/python bench/cpu_bf16.py                   # CIFAR encoder, batch 64, the quick preset's heads
    .venv/bin/python bench/cpu_bf16.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.data import Batch  # noqa: E402
from train.methods import RunContext, get_method  # noqa: E402

# the quick preset's settings (experiments/reproduce.py), with DeepCluster's k at CIFAR scale
OPTIONS = {"monogan": {"g_upsampling": "resize"}, "rotnet": {"head_dim": 1024},
           "deepcluster": {"head_dim": 1024, "k": 100}, "supervised": {"head_dim": 1024}}


def time_steps(name: str, batch_size: int, steps: int, rounds: int) -> dict[str, float]:
    """Best seconds per step of `name` in fp32 and under bf16 autocast, on the CPU."""
    cls = get_method(name)
    torch.manual_seed(0)
    model = cls(cls.Options(**OPTIONS.get(name, {})), "cifar", num_samples=1024,
                num_classes=10 if cls.data_kind == "labelled" else None, device=torch.device("cpu"))
    model.to(memory_format=torch.channels_last)
    model.channels_last = True
    model.configure(RunContext.for_epochs(10))
    if name == "deepcluster":
        model.set_labels(torch.arange(1024) % 100, epoch=0)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(batch_size, 3, 32, 32, generator=gen) * 255).to(torch.uint8)
    batch = Batch(images, torch.arange(batch_size),
                  torch.randint(0, 10, (batch_size,)) if cls.data_kind == "labelled" else None)
    model.train()
    contexts = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    best = {mode: float("inf") for mode in contexts}
    for _ in range(rounds):
        for mode, context in contexts.items():
            for _ in range(2):  # warm-up: oneDNN picks and caches its kernels per shape and dtype
                with context():
                    model.training_step(batch, gen)
            t = time.perf_counter()
            for _ in range(steps):
                with context():
                    model.training_step(batch, gen)
            best[mode] = min(best[mode], (time.perf_counter() - t) / steps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="monogan,rotnet,deepcluster,supervised")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    native = sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16")}) or ["none"]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 instructions: {', '.join(native)}")
    for name in args.methods.split(","):
        best = time_steps(name, args.batch_size, args.steps, args.rounds)
        print(f"{name:12s} fp32 {args.batch_size / best['fp32']:8.1f} images/s   "
              f"bf16 {args.batch_size / best['bf16']:8.1f} images/s   bf16/fp32 {best['fp32'] / best['bf16']:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
