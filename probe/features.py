"""What each linear probe reads: a probed tap's output, max-pooled (or not) and flattened.

The pooling rule (Zhang et al., 2017, kept by the paper): on ImageNet-style data a spatial tap (C, H, W) is
adaptively max-pooled to a square grid s x s with C * s * s nearest a target of about 9,600 dimensions: AlexNet's
conv1..conv5 take the paper's targets (`PAPER_POOLED_DIMS`), any other spatial tap `DEFAULT_POOLED_DIMS`; a map
that is already at most s x s is kept whole. On CIFAR-style data a spatial tap of at most `DEFAULT_POOLED_DIMS`
dimensions is kept whole (the paper probes CIFAR "without dimensionality reduction": its CIFAR encoder's largest
map, conv1, is exactly 9,600), and a larger one (a ResNet's 64 x 32 x 32 stem, 65,536) is pooled towards 9,600 as
on ImageNet-style data, so a CIFAR feature cache stays about 2 GB per tap at 50,000 images. A vector tap (D,) is
never pooled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.models.contract import TapEncoder, tap_shapes

# Zhang et al. (2017), kept by the paper: conv1..conv5 of AlexNet pooled to these many dimensions.
PAPER_POOLED_DIMS = {"conv1": 9600, "conv2": 9216, "conv3": 9600, "conv4": 9600, "conv5": 9216}
DEFAULT_POOLED_DIMS = 9600


@dataclass(frozen=True)
class LayerPlan:
    """How one tap is reduced: its shape ((C, H, W) or (D,)), pooled grid side (None: kept whole), dims."""

    name: str
    shape: tuple[int, ...]
    pooled_side: int | None
    dims: int

    def to_dict(self) -> dict:
        return {"activation_shape": list(self.shape), "pooled_side": self.pooled_side, "dims": self.dims}


def pooled_side(channels: int, target_dims: int) -> int:
    """The square grid side s for which channels * s * s is nearest to `target_dims`.

    For AlexNet at 224 px (96, 256, 384, 384, 256 channels) this gives 10, 6, 5, 5, 6: exactly 9600, 9216,
    9600, 9600, 9216 dimensions.
    """
    return max(1, round(math.sqrt(target_dims / channels)))


def pooling_target(name: str, shape: tuple[int, ...], reduce: bool) -> int | None:
    """The dimensions tap `name` of `shape` is pooled towards (None: not pooled), by the module's rule;
    `reduce` is False for CIFAR-style data, where only maps above `DEFAULT_POOLED_DIMS` are pooled."""
    if len(shape) != 3:
        return None
    if not reduce:
        return DEFAULT_POOLED_DIMS if math.prod(shape) > DEFAULT_POOLED_DIMS else None
    return PAPER_POOLED_DIMS.get(name, DEFAULT_POOLED_DIMS)


def plan_layers(module: TapEncoder, layers: list[str], input_size: int, reduce: bool) -> list[LayerPlan]:
    """Reduction plans for the taps `layers`, from one forward of a zero image at `input_size`."""
    shapes = tap_shapes(module, layers, input_size)
    plans = []
    for name in layers:
        shape = shapes[name]
        target = pooling_target(name, shape, reduce)
        side = pooled_side(shape[0], target) if target else None
        if side is not None and side >= max(shape[1:]):
            side = None  # the map is already at most that small: pooling would only copy it
        dims = shape[0] * side * side if side else math.prod(shape)
        plans.append(LayerPlan(name, shape, side, dims))
    return plans


class FeatureReducer(nn.Module):
    """Adaptive max-pooling per layer where planned, then flattening to (N, dims)."""

    def __init__(self, plans: list[LayerPlan]):
        super().__init__()
        self.pools = nn.ModuleDict({
            p.name: nn.AdaptiveMaxPool2d(p.pooled_side) if p.pooled_side else nn.Identity() for p in plans
        })

    def forward(self, activations: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: pool(activations[name]).flatten(1) for name, pool in self.pools.items()}


class FrozenFeatures(nn.Module):
    """Frozen trunk + reducer: one trunk forward yields the inputs of every probe."""

    def __init__(self, trunk: nn.Module, plans: list[LayerPlan]):
        super().__init__()
        self.trunk = trunk.eval().requires_grad_(False)
        self.reducer = FeatureReducer(plans)
        self.layers = [p.name for p in plans]

    def train(self, mode: bool = True) -> FrozenFeatures:
        # the trunk stays in eval mode whatever the caller asks: its statistics are part of what is probed
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.reducer(self.trunk.forward_taps(images, self.layers))
