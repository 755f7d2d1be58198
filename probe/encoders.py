"""Encoders to evaluate: an `encoder.pt` from `train`, or `random:ARCH` (the random-init baseline)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import EncoderError
from pipeline.hashing import sha256_files
from train.encoder_io import load_encoder
from train.models import ENCODERS, build_encoder

RANDOM_PREFIX = "random:"


@dataclass
class Encoder:
    """A network under evaluation with what identifies it in a results file."""

    module: nn.Module
    arch: str
    source: str  # the path of its encoder.pt, or "random:ARCH"
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.module.layer_names)

    @property
    def input_size(self) -> int:
        return int(self.module.input_size)


def open_encoder(spec: str, seed: int = 0) -> Encoder:
    """The encoder named by `spec`: a path to an `encoder.pt`, or `random:ARCH` initialised from `seed`.

    `random:ARCH:key=value,...` passes architecture options, e.g. `random:cifar:leaky_relu=true`.
    """
    if spec.startswith(RANDOM_PREFIX):
        arch, _, options = spec[len(RANDOM_PREFIX):].partition(":")
        if arch not in ENCODERS:
            known = ", ".join(sorted(ENCODERS))
            raise EncoderError(f"{spec}: unknown architecture {arch!r} (known: {known})")
        arch_kwargs = _parse_options(spec, options)
        with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's stream
            torch.manual_seed(seed)
            try:
                module = build_encoder(arch, **arch_kwargs)
            except (TypeError, ValueError) as exc:
                raise EncoderError(f"{spec}: cannot build {arch!r} ({exc})") from None
        module.eval()
        identity = {"source": spec, "arch": arch, "arch_kwargs": arch_kwargs, "config": {},
                    "random_init_seed": seed}
        return Encoder(module, arch, spec, identity)
    path = Path(spec)
    module, info = load_encoder(path, map_location="cpu")  # an EncoderFileError (an EncoderError) when unusable
    identity = {"source": str(path), "sha256": sha256_files(path), **info}
    return Encoder(module, info["arch"], str(path), identity)


def require_layers(encoder: Encoder, layers: list[str] | None) -> list[str]:
    """The requested layers in network order (all of them when None); an error naming the unknown ones."""
    if not layers:
        return list(encoder.layer_names)
    unknown = [name for name in layers if name not in encoder.layer_names]
    if unknown:
        raise EncoderError(f"{encoder.source}: architecture {encoder.arch!r} has no layer "
                           f"{', '.join(unknown)} (it has {', '.join(encoder.layer_names)})")
    return [name for name in encoder.layer_names if name in layers]


def require_input_size(encoder: Encoder, size: int, data_name: str) -> None:
    """Refuse to run an encoder on images of a size other than the one it was built for."""
    if encoder.input_size != size:
        fits = [name for name, build in sorted(ENCODERS.items()) if _design_size(build) == size]
        raise EncoderError(f"{encoder.source}: architecture {encoder.arch!r} takes {encoder.input_size} px "
                           f"input but {data_name} is evaluated at {size} px "
                           f"(use {' or '.join(fits) or 'another architecture'})")


def absorb_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of `module` with every block's `bn` folded into its `conv`, and `bn` replaced by Identity.

    In eval mode BatchNorm is an affine map per channel, so it can be absorbed into the preceding convolution:
    the probes then see exactly the same activations from a network that has no BatchNorm left to misuse.
    """
    folded = copy.deepcopy(module).eval()
    for block in folded.modules():
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            block.conv = fold_conv_bn(conv, bn)
            block.bn = nn.Identity()
    return folded


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The convolution computing bn(conv(x)) with `bn` in eval mode (its running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise EncoderError("cannot absorb a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter(bias * scale + shift, requires_grad=conv.weight.requires_grad)
    return fused


def _parse_options(spec: str, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise EncoderError(f"{spec}: expected key=value architecture options, got {item!r}")
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            options[key.strip()] = lowered == "true"
        else:
            try:
                options[key.strip()] = int(value)
            except ValueError:
                options[key.strip()] = value.strip()
    return options


def _design_size(build) -> int | None:
    try:
        return int(build().input_size)
    except Exception:  # a registered factory that needs arguments has no default size to offer
        return None

