"""Which multi-view augmentation is fastest here: train/augment/multiview.py (hand-written batched ops) against
kornia.augmentation and torchvision's tensor transforms (v2), on the same batches, in one process.

The recipe is BYOL's two asymmetric views with blur on (train.augment.multiview.byol_views(size, blur=True)), the one
that uses every operation: random-resized crop + flip, colour jitter p = 0.8, greyscale 0.2, Gaussian blur 1.0 / 0.1,
solarisation 0 / 0.2. Each implementation draws its parameters per sample:
- ``ours``: train.augment.multiview.multiview, every draw from one torch.Generator;
- ``kornia``: one kornia.augmentation.AugmentationSequential per view on the whole batch (per-sample parameters;
  its draws come from torch's global RNG, so it is seeded with torch.manual_seed);
- ``torchvision``: torchvision.transforms.v2 on tensors, one sample at a time (on a batch, v2 draws one set of
  parameters for the whole batch, which is not the methods' augmentation), seeded with torch.manual_seed.
Each is run twice from the same seed to check it is deterministic. Timings alternate between the
implementations, so load from other jobs falls on all alike; the table gives median images/s (views per
second) and each one's ratio to ``ours``.

    .venv/bin/python bench/multiview.py
    .venv/bin/python bench/multiview.py --repeats 5 --batch-32 512 --batch-224 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kornia.augmentation as K  # noqa: E402
import torchvision.transforms.v2 as T  # noqa: E402

from train.augment.multiview import ViewSpec, _blur_kernel_size, byol_views, multiview  # noqa: E402

Augment = Callable[[torch.Tensor, int], list[torch.Tensor]]  # (uint8 batch, seed) -> views in (-1, 1)


def ours(specs: list[ViewSpec]) -> Augment:
    def run(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        return multiview(images, specs, torch.Generator().manual_seed(seed))
    return run


def kornia_views(specs: list[ViewSpec]) -> Augment:
    pipelines = [K.AugmentationSequential(
        K.RandomResizedCrop((s.size, s.size), scale=s.scale, ratio=s.ratio),
        K.RandomHorizontalFlip(p=s.flip_p),
        K.ColorJitter(*s.jitter, p=s.jitter_p),
        K.RandomGrayscale(p=s.grey_p),
        K.RandomGaussianBlur(_blur_kernel_size(s.size), (0.1, 2.0), p=s.blur_p),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=s.solarize_p)) for s in specs]

    def run(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unit = images.float() / 255
            return [pipeline(unit) * 2 - 1 for pipeline in pipelines]
    return run


def torchvision_views(specs: list[ViewSpec]) -> Augment:
    pipelines = [T.Compose([
        T.RandomResizedCrop(s.size, scale=s.scale, ratio=s.ratio, antialias=True),
        T.RandomHorizontalFlip(p=s.flip_p),
        T.RandomApply([T.ColorJitter(*s.jitter)], p=s.jitter_p),
        T.RandomGrayscale(p=s.grey_p),
        T.RandomApply([T.GaussianBlur(_blur_kernel_size(s.size), (0.1, 2.0))], p=s.blur_p),
        T.RandomSolarize(0.5, p=s.solarize_p)]) for s in specs]

    def run(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unit = images.float() / 255
            return [torch.stack([pipeline(image) for image in unit]) * 2 - 1 for pipeline in pipelines]
    return run


def images_per_s(augment: Augment, images: torch.Tensor, views: int, seed: int) -> float:
    start = time.perf_counter()
    augment(images, seed)
    return images.shape[0] * views / (time.perf_counter() - start)


def deterministic(augment: Augment, images: torch.Tensor) -> bool:
    first, again = augment(images, 11), augment(images, 11)
    return all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def compare(source: int, size: int, batch: int, repeats: int) -> None:
    images = torch.randint(0, 256, (batch, 3, source, source), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    specs = byol_views(size, blur=True)
    impls = {"ours": ours(specs), "kornia": kornia_views(specs), "torchvision": torchvision_views(specs)}
    exact = {name: deterministic(fn, images[:8]) for name, fn in impls.items()}
    rates: dict[str, list[float]] = {name: [] for name in impls}
    for r in range(repeats):
        order = list(impls) if r % 2 == 0 else list(reversed(impls))
        for name in order:
            rates[name].append(images_per_s(impls[name], images, len(specs), seed=r))
    reference = statistics.median(rates["ours"])
    for name in impls:
        rate = statistics.median(rates[name])
        print(f"{batch:4d} x {source:3d} px -> 2 views of {size:3d} px  {name:12s} {rate:9.1f} images/s  "
              f"ratio to ours {rate / reference:6.3f}  deterministic {'yes' if exact[name] else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-32", type=int, default=256, help="batch of 32 px images (CIFAR scale)")
    ap.add_argument("--batch-224", type=int, default=32, help="batch of 256 px images cropped to 224 px")
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, load "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}; medians of {args.repeats} alternating runs")
    compare(32, 32, args.batch_32, args.repeats)
    compare(256, 224, args.batch_224, args.repeats)


if __name__ == "__main__":
    main()
