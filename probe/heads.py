"""The linear probes: BatchNorm without affine parameters, then one linear layer, per probed layer."""

from __future__ import annotations

from torch import Tensor, nn


class LinearProbe(nn.Sequential):
    """BatchNorm1d(affine=False) + Linear, as in the released linear-probes code (Xavier weights, zero bias).

    The normalisation puts features of every depth on one scale, so one learning rate suits all probes.
    """

    def __init__(self, dims: int, num_classes: int):
        super().__init__(nn.BatchNorm1d(dims, affine=False), nn.Linear(dims, num_classes))
        nn.init.xavier_uniform_(self[1].weight)
        nn.init.zeros_(self[1].bias)


class LinearProbes(nn.ModuleDict):
    """One LinearProbe per layer; maps {layer: features} to {layer: class scores}."""

    def __init__(self, dims: dict[str, int], num_classes: int):
        super().__init__({name: LinearProbe(d, num_classes) for name, d in dims.items()})

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: probe(features[name]) for name, probe in self.items()}
