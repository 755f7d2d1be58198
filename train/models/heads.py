"""Heads that sit on an encoder's final representation (``forward``): the AlexNet classifier and friends."""

from __future__ import annotations

from torch import nn

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


def linear_head(in_dim: int, out: int) -> nn.Sequential:
    """One linear layer on the flattened representation (the default head of a registered encoder)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, out))


def alexnet_classifier(in_dim: int, out: int) -> nn.Sequential:
    """AlexNet's fc6-fc8 (4096 hidden units, dropout 0.5), PyTorch's default init: the fine-tuning head of the
    AlexNet family (Tables 4 and 5)."""
    return classifier_head(in_dim, ALEXNET_HIDDEN, out, dropout=0.5, reinit=False)
