"""The probes' protocols, declared once and free of torch: the options `probe linear` and `probe finetune` are
generated from (probe/cli.py), what results.json records, and what `probe report` compares with the paper's.

Kept apart from the code that runs them (probe.linear, probe.finetune, probe.fit) so that the report, the command
line's help and the experiments' drivers read them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.options import check_fields, opt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = {  # what --normalize names: (mean, std) per channel of [0, 1] pixels
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # maps [0, 1] to [-1, 1], the usual GAN input range
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # pixel values in [0, 1] as they are
}


class Setting:
    """The options the two protocols share, each declared here once with its range and help; a protocol (a frozen
    dataclass whose fields `probe`'s command line is generated from, probe/cli.py) gives its own defaults, as in
    ``epochs: int = Setting.epochs(36)``."""

    @staticmethod
    def epochs(default: int) -> Any:
        return opt(default, "Training epochs.", min=1)

    @staticmethod
    def lr(default: float) -> Any:
        return opt(default, "Initial learning rate.", min=0, min_open=True)

    @staticmethod
    def milestones(default: tuple[int, ...]) -> Any:
        # epochs, in order; a negative one would divide the learning rate before training starts
        return opt(default, "Epochs at which the learning rate is divided by --lr-divisor.", min=0, increasing=True)

    @staticmethod
    def lr_divisor(default: float) -> Any:
        return opt(default, "What the learning rate is divided by at each of --milestones.", min=0, min_open=True)

    @staticmethod
    def momentum(default: float) -> Any:
        return opt(default, "SGD momentum.", min=0)

    @staticmethod
    def weight_decay(default: float, source: str) -> Any:
        return opt(default, f"SGD weight decay ({source}).", min=0)

    @staticmethod
    def size(default: int, what: str) -> Any:
        """ImageNet-style geometry (resize 256, crop 224 as the paper): recorded, no command-line option."""
        return opt(default, what, min=1)

    @staticmethod
    def ten_crop() -> Any:
        return opt(True, "ImageNet-style testing: average 10 crops, or the centre crop only.", negative="center-crop")

    @staticmethod
    def seed() -> Any:
        # 32 bits, as every seed of train and probe (common.options.SEED)
        return opt(0, "Seeds random:ARCH weights, the init of what is trained, and the data order.", min=0,
                   max=2**32 - 1)


class StepSchedule:
    """SGD settings and a learning rate divided by `lr_divisor` at each of `milestones` (epochs); mixed into the
    protocols, whose values it checks when one is made (:func:`common.options.check_fields`)."""

    epochs: int
    lr: float
    lr_divisor: float
    milestones: tuple[int, ...]
    momentum: float
    weight_decay: float

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # as the command line parses it; frozen protocols hold a tuple
            object.__setattr__(self, "milestones", tuple(self.milestones))
        check_fields(self)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of (0-based) `epoch`."""
        return self.lr / self.lr_divisor ** sum(epoch >= m for m in self.milestones)


@dataclass(frozen=True)
class ProbeRun:
    """How a probe run is carried out, apart from its protocol: nothing here changes what is measured, except
    `limit_train`/`limit_test`, seeded random subsets for quick runs (results.json records the sizes used)."""

    device: str = "cpu"
    workers: int = 0  # data-loading processes (0: in this process)
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ProbeProtocol(StepSchedule):
    """The linear-probe protocol; each field is an option of `probe linear` (but resize and crop, fixed)."""

    epochs: int = Setting.epochs(36)
    lr: float = Setting.lr(0.01)
    milestones: tuple[int, ...] = Setting.milestones((5, 15, 25))
    lr_divisor: float = Setting.lr_divisor(5.0)
    momentum: float = Setting.momentum(0.9)
    # the paper's text gives none
    weight_decay: float = Setting.weight_decay(1e-5, "as the released linear-probes code")
    batch_size: int = opt(192, "Images per SGD step (at least 2: the probes' BatchNorm needs two samples).",
                          min=2)  # the released linear-probes code's default
    resize: int = Setting.size(256, "ImageNet-style data: shorter side resized to this before cropping.")
    crop: int = Setting.size(224, "ImageNet-style data: side of the square crops.")
    ten_crop: bool = Setting.ten_crop()
    cifar_flip: bool = opt(False, "CIFAR data: cache the mirrored training images too and train each epoch on a "
                                  "random one of (image, mirror) per sample (2x feature memory).")
    seed: int = Setting.seed()


@dataclass(frozen=True)
class FinetuneProtocol(StepSchedule):
    """The fine-tuning protocol; each field is an option of `probe finetune` (but resize and crop, fixed)."""

    freeze: str = opt("conv2", "Last layer kept frozen (conv2: Table 4), or none (train everything: Table 5).")
    keep: str = opt("conv2", "Last layer taken from ENCODER; deeper ones start from a fresh seeded init (all: all).")
    epochs: int = Setting.epochs(90)
    lr: float = Setting.lr(0.01)
    milestones: tuple[int, ...] = Setting.milestones((30, 60, 80))
    lr_divisor: float = Setting.lr_divisor(10.0)
    momentum: float = Setting.momentum(0.9)
    weight_decay: float = Setting.weight_decay(5e-4, "the usual AlexNet value")
    batch_size: int = opt(256, "Images per SGD step.", min=1)
    resize: int = Setting.size(256, "ImageNet-style data: shorter side resized to this before cropping.")
    crop: int = Setting.size(224, "ImageNet-style data: side of the square crops.")
    ten_crop: bool = Setting.ten_crop()
    seed: int = Setting.seed()
