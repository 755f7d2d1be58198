"""Heads that sit on an encoder's final map: the AlexNet classifier and friends."""

from __future__ import annotations

from torch import nn


def classifier_head(in_dim: int, hidden: int, out: int | None, *, batchnorm: bool = False,
                    dropout: float = 0.5) -> nn.Sequential:
    """AlexNet's fc6-fc7(-fc8): [Dropout] Linear ReLU [Dropout] Linear ReLU [Linear(out)].

    ``batchnorm=True`` gives RotNet's variant (Linear without bias, BatchNorm1d, ReLU; no dropout).
    ``out=None`` stops after fc7 (DeepCluster keeps its top layer separate, to re-initialise it).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    dim = in_dim
    for _ in range(2):
        if batchnorm:
            layers += [nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        else:
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
        dim = hidden
    if out is not None:
        layers.append(nn.Linear(dim, out))
    head = nn.Sequential(*layers)
    for m in head.modules():
        if isinstance(m, nn.Linear):  # DeepCluster / AlexNet init for fully connected layers
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head
