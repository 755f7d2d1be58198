"""The encoder registry (timm-like): name -> factory, with a default classifier head per encoder.

A factory is registered with ``@register_encoder(NAME)`` in any module of ``train/models/`` or in a plugin file
named by ``SINGLE_IMAGE_SSL_PLUGINS`` (see :mod:`train.plugins`); the registry imports those when it is first read,
so a new encoder is one new file. What it builds must implement :class:`train.models.contract.TapEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from train.models.contract import check_encoder
from train.models.heads import linear_head
from train.plugins import Registry

EncoderFactory = Callable[..., nn.Module]
HeadFactory = Callable[[int, int], nn.Module]  # (input dimensions, classes) -> a head on forward()'s output

ENCODERS: Registry[EncoderFactory] = Registry("encoder", "train.models")
_HEADS: dict[str, HeadFactory] = {}


def register_encoder(name: str, *, head: HeadFactory = linear_head) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register ``fn(**kw) -> encoder`` under ``name``; a duplicate name is an error.

    ``head(dims, num_classes)`` is the classifier that ``probe finetune`` puts on the encoder's flattened
    ``forward`` output (default: one linear layer).
    """

    def deco(fn: EncoderFactory) -> EncoderFactory:
        ENCODERS.add(name, fn)
        _HEADS[name] = head
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(ENCODERS)


def build_encoder(arch: str, **kw: Any) -> nn.Module:
    """Build a registered encoder by name.

    The keyword arguments are recorded on the module as ``arch`` / ``arch_kwargs`` so that
    :func:`train.models.encoder_io.save_encoder` can store exactly what is needed to rebuild it. A module that does not
    implement the encoder contract is a ``TypeError`` naming what it lacks.
    """
    try:
        factory = ENCODERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(list_encoders())}") from None
    model = factory(**kw)
    check_encoder(model, arch)
    model.arch = arch
    model.arch_kwargs = dict(kw)
    return model


def default_head(arch: str) -> HeadFactory:
    """The classifier head factory registered with ``arch``."""
    if arch not in ENCODERS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(list_encoders())}")
    return _HEADS[arch]
