"""Folding eval-mode BatchNorm into the convolution before it: ``for_probing`` for encoders with Conv+BN pairs.

In eval mode BatchNorm is an affine map per channel, so it can be absorbed into the preceding convolution: the
probes then see the same activations from a network that has no BatchNorm left to misuse (the paper's protocol,
section 4.1).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The convolution computing bn(conv(x)) with `bn` in eval mode (its running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot absorb a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter(bias * scale + shift, requires_grad=conv.weight.requires_grad)
    return fused


def fold_batchnorm(module: nn.Module, pairs: Iterable[tuple[str, str]]) -> nn.Module:
    """An eval-mode copy of `module` with each (conv, bn) pair, given as dotted submodule paths, folded: the
    convolution replaced by :func:`fold_conv_bn`'s, the BatchNorm by ``nn.Identity``. `module` is untouched."""
    folded = copy.deepcopy(module).eval()
    for conv_path, bn_path in pairs:
        conv, bn = folded.get_submodule(conv_path), folded.get_submodule(bn_path)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"{conv_path} / {bn_path}: expected a Conv2d and a BatchNorm2d, got "
                            f"{type(conv).__name__} and {type(bn).__name__}")
        _replace(folded, conv_path, fold_conv_bn(conv, bn))
        _replace(folded, bn_path, nn.Identity())
    return folded


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)
