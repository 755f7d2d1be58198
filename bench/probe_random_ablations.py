"""Two random-baseline variants that `probe linear` has no option for, kept to reproduce the investigation in
bench/results/probe-random-cifar10.md:

- `calibrated-bn`: BatchNorm statistics of the random `cifar` encoder measured on 10,000 training images (train
  mode, cumulative average) before they are absorbed, instead of the initial mean 0 / variance 1.
- `default-init`: PyTorch's default convolution init (uniform weights and biases) instead of train's Kaiming
  normal with zero biases.

    .venv/bin/python bench/probe_random_ablations.py calibrated-bn runs/ablation-bn
    .venv/bin/python bench/probe_random_ablations.py default-init runs/ablation-init
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.datasets import Transformed, open_data, subset  # noqa: E402
from probe.encoders import open_encoder  # noqa: E402
from probe.linear import linear_results, run_linear  # noqa: E402
from probe.protocols import ProbeProtocol, ProbeRun  # noqa: E402
from probe.results import layers_markdown, write_json  # noqa: E402
from probe.transforms import Normalization, cifar_transform  # noqa: E402
from train.models.encoders import ConvEncoder  # noqa: E402

DATA = f"cifar10-jpg:{ROOT.parent / 'shared' / 'data' / 'cifar10-jpg'}"


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, images: torch.utils.data.DataLoader) -> None:
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over all calibration batches
    module.train()
    for batch, _ in images:
        module(batch)
    module.eval()


def pytorch_default_init(self: ConvEncoder) -> None:
    for m in self.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            m.reset_parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=["calibrated-bn", "default-init"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--normalize", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.variant == "default-init":
        ConvEncoder.reset_parameters = pytorch_default_init
    encoder = open_encoder("random:cifar", seed=args.seed)
    data = open_data(DATA)
    norm = Normalization.choose(args.normalize, {})
    if args.variant == "calibrated-bn":
        calibration = Transformed(subset(data.train, 10_000, seed=7), cifar_transform(norm))
        calibrate_batchnorm(encoder.module, torch.utils.data.DataLoader(calibration, batch_size=500))
    encoder.identity["ablation"] = args.variant
    run = run_linear(encoder, data, ProbeProtocol(seed=args.seed), norm, ProbeRun(workers=1, progress=False))
    results = linear_results(encoder, run, "cpu", " ".join(sys.argv))
    write_json(args.out / "results.json", results)
    (args.out / "results.md").write_text(layers_markdown(results))
    print(layers_markdown(results))


if __name__ == "__main__":
    main()
