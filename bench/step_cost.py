"""CPU seconds of one training step of each modern method at `reproduce modern`'s quick size (ResNet-18, CIFAR
stem, width 16, batch 128 of 32 px images), on a fixed number of threads: the method's whole ``training_step``
(batched views, forwards, backward, optimiser, EMA targets and queues), without data loading or the loop around it.

With one thread the CPU seconds are what a step costs wherever it runs; bench/modern_steps.py times the real
command, whose CPU seconds on two threads include what the threads spend waiting for each other (and, on a loaded
machine, for the CPU).

    .venv/bin/python bench/step_cost.py [--methods simclr,mocov2,byol,dino] [--threads 1] [--repeats 2]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.data.sources import Batch  # noqa: E402
from train.methods import get_method  # noqa: E402
from train.methods.base import RunContext  # noqa: E402

ARCH, BATCH, SIZE, STEPS_PER_EPOCH = "resnet18-cifar-w16", 128, 32, 78  # 10,000 Image B patches per epoch


def step_cost(method: str, repeats: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per training step, after one step that warms the allocator and oneDNN."""
    cls = get_method(method)
    model = cls(cls.Options(), ARCH, STEPS_PER_EPOCH * BATCH)
    model.configure(RunContext.for_epochs(5, STEPS_PER_EPOCH))
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    batch = Batch(images, torch.arange(BATCH))
    model.training_step(batch, generator)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        model.training_step(batch, generator)
    return (time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="simclr,mocov2,byol,dino")
    ap.add_argument("--threads", type=int, default=1, choices=range(1, 65), metavar="N")
    ap.add_argument("--repeats", type=int, default=2, choices=range(1, 101), metavar="N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {ARCH}, batch {BATCH} x {SIZE} px, {args.threads} thread(s), torch {torch.__version__}")
    for method in args.methods.split(","):
        cpu, wall = step_cost(method, args.repeats)
        print(f"{method:8s} {cpu:6.2f} CPU-s / step   {wall:6.2f} s wall / step")


if __name__ == "__main__":
    main()
