"""What each linear probe reads: a probed layer's activation map, max-pooled (or not) and flattened."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# Zhang et al. (2017), kept by the paper: conv1..conv5 of AlexNet pooled to these many dimensions.
PAPER_POOLED_DIMS = {"conv1": 9600, "conv2": 9216, "conv3": 9600, "conv4": 9600, "conv5": 9216}


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is reduced: activation shape (C, H, W), pooled grid side (None: kept whole), dims."""

    name: str
    shape: tuple[int, int, int]
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


@torch.no_grad()
def plan_layers(module: nn.Module, layers: list[str], input_size: int, reduce: bool) -> list[LayerPlan]:
    """Reduction plans for `layers`, from one forward of a zero image at `input_size`."""
    probe_input = torch.zeros(1, input_channels(module), input_size, input_size)
    was_training = module.training
    module.eval()
    try:
        activations = module.forward_features(probe_input, layers)
        shapes = {name: tuple(f.shape[1:]) for name, f in activations.items()}
    finally:
        module.train(was_training)
    plans = []
    for name in layers:
        channels, height, width = shapes[name]
        target = PAPER_POOLED_DIMS.get(name) if reduce else None
        side = pooled_side(channels, target) if target else None
        if side is not None and side >= max(height, width):
            side = None  # the map is already at most that small: pooling would only copy it
        dims = channels * side * side if side else channels * height * width
        plans.append(LayerPlan(name, (channels, height, width), side, dims))
    return plans


def input_channels(module: nn.Module) -> int:
    """Channels of the images the encoder takes (RGB where a Sobel front end turns them into gradients)."""
    if getattr(module, "sobel", None) is not None:
        return 3
    return module.conv1.conv.in_channels


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
        return self.reducer(self.trunk.forward_features(images, self.layers))
