"""A small name -> factory registry for encoders, in the spirit of ``timm.create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

EncoderFactory = Callable[..., nn.Module]

# Filled by the @register_encoder decorators in train/models/encoders.py (imported by the package).
ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register ``fn(**kw) -> nn.Module`` under ``name``; a duplicate name is a programming error."""

    def deco(fn: EncoderFactory) -> EncoderFactory:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(ENCODERS)


def build_encoder(arch: str, **kw: Any) -> nn.Module:
    """Build a registered encoder by name.

    The keyword arguments are recorded on the module as ``arch`` / ``arch_kwargs`` so that
    :func:`train.encoder_io.save_encoder` can store exactly what is needed to rebuild it.
    """
    try:
        factory = ENCODERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(list_encoders())}") from None
    model = factory(**kw)
    model.arch = arch
    model.arch_kwargs = dict(kw)
    return model
