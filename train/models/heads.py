"""Heads that sit on an encoder's final representation (``forward``): the AlexNet classifier and friends, and the
projection heads of the modern methods (SimCLR, MoCo v2, BYOL, DINO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALEXNET_HIDDEN = 4096


def classifier_head(in_dim: int, hidden: int, out: int | None, *, batchnorm: bool = False,
                    dropout: float = 0.5, reinit: bool = True) -> nn.Sequential:
    """AlexNet's fc6-fc7(-fc8): [Dropout] Linear ReLU [Dropout] Linear ReLU [Linear(out)].

    ``batchnorm=True`` gives RotNet's variant (Linear without bias, BatchNorm1d, ReLU; no dropout).
    ``out=None`` stops after fc7 (DeepCluster keeps its top layer separate, to re-initialise it).
    ``reinit=False`` keeps PyTorch's default initialisation of the linear layers instead of DeepCluster's
    N(0, 0.01) (what `probe finetune` has always used).
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
    if reinit:
        for m in head.modules():
            if isinstance(m, nn.Linear):  # DeepCluster / AlexNet init for fully connected layers
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return head


class GlobalPool(nn.Module):
    """A (B, C, H, W) map averaged over its positions to (B, C); any other output flattened to (B, D): the pooled
    output of an encoder (a ResNet's pooled layer4 and a ViT's class token pass unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


def pooled_linear_head(in_dim: int, out: int) -> nn.Sequential:
    """A linear classifier on the encoder's pooled output (``GlobalPool``), PyTorch's default initialisation."""
    return nn.Sequential(GlobalPool(), nn.Linear(in_dim, out))


def linear_head(in_dim: int, out: int) -> nn.Sequential:
    """One linear layer on the flattened representation (the default head of a registered encoder)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, out))


def alexnet_classifier(in_dim: int, out: int) -> nn.Sequential:
    """AlexNet's fc6-fc8 (4096 hidden units, dropout 0.5), PyTorch's default init: the fine-tuning head of the
    AlexNet family (Tables 4 and 5)."""
    return classifier_head(in_dim, ALEXNET_HIDDEN, out, dropout=0.5, reinit=False)


def projection_mlp(in_dim: int, hidden: int, out: int, *, batchnorm: bool = True) -> nn.Sequential:
    """The two-layer MLP of the modern methods: Linear, [BatchNorm1d], ReLU, Linear.

    SimCLR's projection head g (Chen et al., 2020, section 2.1, with BatchNorm as in its code), BYOL's projector
    and predictor (Grill et al., 2020, section 3.3: 4096 hidden units with BatchNorm, 256 out), MoCo v2's MLP
    head (Chen et al., 2020, "Improved baselines": no BatchNorm). PyTorch's default initialisation.
    """
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out)]
    return nn.Sequential(*layers)


class NormedLinear(nn.Module):
    """A bias-free linear layer whose weight rows are L2-normalised in the forward: ``weight_norm`` with its gain
    fixed at 1 (DINO's ``last_layer`` with ``norm_last_layer=True``)."""

    def __init__(self, in_dim: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021, section 3.1 and its ``DINOHead``): a 3-layer MLP (GELU, hidden
    ``hidden``) to a ``bottleneck``-wide vector, L2-normalised, then a weight-normalised linear layer to ``out_dim``
    logits. Linear layers start truncated-normal (std 0.02) with zero biases, as DINO's."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = NormedLinear(bottleneck, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
