"""`cifar10`: Table 3's CIFAR-10 rows. MonoGAN, RotNet and DeepCluster trained on Image B expanded to a CIFAR-sized
set, their real-data twins (RotNet and the GAN trained on all of CIFAR-10), against the random-initialisation and
fully supervised baselines and the learning-free ones, each probed on conv1..conv4 (experiments/paper_cifar.py)."""

from __future__ import annotations

import functools
from pathlib import Path

from experiments.paper_cifar import PRESETS, baseline_reports, single_image_rows, write_report
from experiments.registry import Target, register
from experiments.stage import Stage


def cifar10_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    stages, reports = single_image_rows(work, preset, src, data, device)
    return stages, [*baseline_reports(work, "Fully supervised", "Random"), *reports]


TARGET = register(Target("cifar10", cifar10_stages, functools.partial(write_report, title="CIFAR-10 Table 3 rows"),
                         PRESETS, work="reproduce-cifar10", order=10))
