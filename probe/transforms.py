"""Input pipelines of the two evaluation styles (paper, section 4.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision import transforms as T

from probe.protocols import NORMALIZATIONS

# `train` feeds every method pixels mapped to (-1, 1) (train.augment.views.to_unit_range): probe an encoder on the
# input range it was trained on, and the random baseline on the same range as the trained encoders.
TRAIN_INPUT = "half"


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def named(cls, name: str) -> Normalization:
        mean, std = NORMALIZATIONS[name]
        return cls(mean, std)

    @classmethod
    def choose(cls, choice: str, encoder_config: dict) -> Normalization:
        """`choice` by name; for "auto", what the encoder's training config records, else `TRAIN_INPUT`.

        A config may record {"normalize": "half"} or {"normalize": {"mean": [...], "std": [...]}}.
        """
        if choice != "auto":
            return cls.named(choice)
        recorded = encoder_config.get("normalize")
        if isinstance(recorded, str) and recorded in NORMALIZATIONS:
            return cls.named(recorded)
        if isinstance(recorded, dict) and {"mean", "std"} <= recorded.keys():
            return cls(tuple(recorded["mean"]), tuple(recorded["std"]))
        return cls.named(TRAIN_INPUT)

    def to_tensor(self) -> T.Compose:
        return T.Compose([T.ToTensor(), T.Normalize(self.mean, self.std)])


def cifar_transform(norm: Normalization, mirror: bool = False) -> T.Compose:
    """CIFAR style: the native 32x32 image (or its mirror image), no random augmentation (so features can be
    computed once)."""
    return T.Compose([T.RandomHorizontalFlip(1.0), norm.to_tensor()]) if mirror else norm.to_tensor()


def cifar_test_transform(norm: Normalization) -> T.Compose:
    """The CIFAR image as a single crop, (1, 3, 32, 32), the layout of the 10-crop test input."""
    return T.Compose([_Single(), StackCrops(norm.to_tensor())])


def imagenet_train_transform(norm: Normalization, resize: int = 256, crop: int = 224) -> T.Compose:
    """RotNet's probe training input: shorter side to `resize`, a random `crop` square, random flip."""
    return T.Compose([T.Resize(resize), T.RandomCrop(crop), T.RandomHorizontalFlip(), norm.to_tensor()])


def imagenet_test_transform(norm: Normalization, resize: int = 256, crop: int = 224,
                            ten_crop: bool = True) -> T.Compose:
    """DeepCluster's test input: shorter side to `resize`, then 10 crops stacked as (10, 3, crop, crop).

    With `ten_crop=False`, the centre crop alone, shaped (1, 3, crop, crop) so callers see one layout.
    """
    crops = T.TenCrop(crop) if ten_crop else T.Compose([T.CenterCrop(crop), _Single()])
    return T.Compose([T.Resize(resize), crops, StackCrops(norm.to_tensor())])


class StackCrops:
    """Apply `per_crop` to each crop and stack the results (a class, not a lambda: workers pickle it)."""

    def __init__(self, per_crop):
        self.per_crop = per_crop

    def __call__(self, crops: Sequence) -> torch.Tensor:
        return torch.stack([self.per_crop(c) for c in crops])


class _Single:
    def __call__(self, image):
        return (image,)
