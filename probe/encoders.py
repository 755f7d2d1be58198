"""Encoders to evaluate: an `encoder.pt` from `train`, or `random:ARCH` (the random-init baseline).

The probes use only the encoder contract (train/models/contract.py): named taps, input size and channels,
`for_probing`, `first_layer_weight`, `tap_module`; any registered encoder can be evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import EncoderError
from common.hashing import sha256_files
from train.models import ENCODERS, build_encoder
from train.models.encoder_io import load_encoder

RANDOM_PREFIX = "random:"


@dataclass
class Encoder:
    """A network under evaluation with what identifies it in a results file."""

    module: nn.Module  # implements train.models.contract.TapEncoder
    arch: str
    source: str  # the path of its encoder.pt, or "random:ARCH"
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(self.module.taps)

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
        # an encoder without parameters (the scattering transform) is not a random network: its features are
        # fixed by the architecture, which is then what names its paper row (probe report)
        config = {} if any(True for _ in module.parameters()) else {"method": arch.split("-")[0]}
        identity = {"source": spec, "arch": arch, "arch_kwargs": arch_kwargs, "config": config,
                    "random_init_seed": seed}
        return Encoder(module, arch, spec, identity)
    path = Path(spec)
    module, info = load_encoder(path, map_location="cpu")  # an EncoderFileError (an EncoderError) when unusable
    identity = {"source": str(path), "sha256": sha256_files(path), **info}
    return Encoder(module, info["arch"], str(path), identity)


def require_layers(encoder: Encoder, layers: list[str] | None) -> list[str]:
    """The requested taps in network order (all of them when None); an error naming the unknown ones."""
    if not layers:
        return list(encoder.taps)
    unknown = [name for name in layers if name not in encoder.taps]
    if unknown:
        raise EncoderError(f"{encoder.source}: architecture {encoder.arch!r} has no layer "
                           f"{', '.join(unknown)} (it has {', '.join(encoder.taps)})")
    return [name for name in encoder.taps if name in layers]


def require_input_size(encoder: Encoder, size: int, data_name: str) -> None:
    """Refuse to run an encoder on images of a size other than the one it was built for."""
    if encoder.input_size != size:
        fits = [name for name, build in sorted(ENCODERS.items()) if _design_size(build) == size]
        raise EncoderError(f"{encoder.source}: architecture {encoder.arch!r} takes {encoder.input_size} px "
                           f"input but {data_name} is evaluated at {size} px "
                           f"(use {' or '.join(fits) or 'another architecture'})")


def probing_trunk(encoder: Encoder) -> nn.Module:
    """The encoder as the probes read it: its `for_probing` copy (eval mode, BatchNorm folded where it has one)."""
    try:
        return encoder.module.for_probing()
    except ValueError as exc:  # e.g. a BatchNorm without running statistics, which cannot be folded
        raise EncoderError(f"{encoder.source}: cannot prepare {encoder.arch!r} for probing ({exc})") from None


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

