"""`cifar100`: Table 3's CIFAR-100 columns. The single-image models (the same stages as `cifar10`, shared through
--work), RotNet and the GAN trained on CIFAR-100 and a supervised CIFAR-100 baseline, all probed on CIFAR-100 (the
pickles must be given: the set is not in shared/data)."""

from __future__ import annotations

import functools
from pathlib import Path

from common.errors import ToolkitError
from experiments.paper_cifar import PRESETS, baseline_reports, single_image_rows, write_report
from experiments.registry import Target, register
from experiments.stage import Stage


def cifar100_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    """Table 3's CIFAR-100 columns: the single-image models (the same stages as `cifar10`, shared through --work),
    RotNet and the GAN trained on CIFAR-100, and the baselines, all probed on the CIFAR-100 pickles `data` names."""
    from train.data.cifar_pickle import read_cifar

    kind, _, path = data.partition(":")
    if kind != "cifar100" or not path:
        raise ToolkitError("the cifar100 target reads CIFAR-100's python pickles: give --data cifar100:PATH "
                           "(PATH: cifar-100-python/ or the folder holding it; the set is not in shared/data)")
    read_cifar(Path(path).expanduser(), "cifar100")  # a missing or broken folder refused before any stage runs
    stages, reports = single_image_rows(work, preset, src, data, device)
    sup = "supervised-cifar100"
    return stages, [*baseline_reports(work, "Fully supervised", "Random", data, sup), *reports]


TARGET = register(Target(
    "cifar100", cifar100_stages, functools.partial(write_report, title="CIFAR-100 Table 3 columns"), PRESETS,
    work="reproduce-cifar10", order=30,
    data_required="reproduce cifar100: --data cifar100:PATH is required (CIFAR-100's python pickles, "
                  "cifar-100-python/ or the folder holding it; the set is not in shared/data)"))
