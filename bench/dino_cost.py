"""Where a DINO step's compute goes at the quick preset's size (ResNet-18 CIFAR stem at width 16, batch 128: 256
global crops of 32 px and 768 local crops of 14 px): the student backbone, the teacher's forward, and the head at
DINO's size (2,048 hidden, 256 bottleneck, 4,096 outputs) and at a quarter of it. CPU seconds on one thread, so the
figures do not depend on what else the machine runs (the augmentation and the optimiser are not included).

    OMP_NUM_THREADS=1 .venv/bin/python bench/dino_cost.py
"""

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.models import build_encoder  # noqa: E402
from train.models.heads import DINOHead  # noqa: E402

GLOBAL, LOCAL = (256, 32), (768, 14)  # batch 128 x 2 global crops, x 6 local crops of 3/7 of 32 px


def cpu_seconds(fn: Callable[[], None], repeats: int = 2) -> float:
    """CPU seconds per call, after one call that warms the allocator and oneDNN's kernels."""
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def main() -> None:
    torch.set_num_threads(1)
    encoder = build_encoder("resnet18-cifar-w16").to(memory_format=torch.channels_last)
    crops = [torch.randn(n, 3, s, s).contiguous(memory_format=torch.channels_last) for n, s in (GLOBAL, LOCAL)]
    features = torch.randn(GLOBAL[0] + LOCAL[0], 128, requires_grad=True)

    def student() -> None:
        torch.cat([encoder(c) for c in crops]).sum().backward()

    def teacher() -> None:
        with torch.no_grad():
            encoder(crops[0])

    def head_step(head: DINOHead) -> Callable[[], None]:
        def run() -> None:
            head(features).sum().backward()
            with torch.no_grad():
                head(features[:GLOBAL[0]])  # the teacher's head, on the global crops
        return run

    dino, quarter = DINOHead(128, 4096), DINOHead(128, 1024, hidden=512, bottleneck=128)
    print(f"student backbone forward + backward, {GLOBAL[0]} global + {LOCAL[0]} local: "
          f"{cpu_seconds(student):.2f} CPU-s")
    print(f"teacher backbone forward, {GLOBAL[0]} global: {cpu_seconds(teacher):.2f} CPU-s")
    for name, head in (("2048/256/4096", dino), ("512/128/1024", quarter)):
        params = sum(p.numel() for p in head.parameters())
        print(f"head {name} ({params / 1e6:.2f} M parameters), student + teacher: "
              f"{cpu_seconds(head_step(head)):.2f} CPU-s")
    print(f"backbone parameters: {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M")


if __name__ == "__main__":
    main()
