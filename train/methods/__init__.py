"""The method registry: one file per method, each registering its :class:`Method` subclass by name."""

from __future__ import annotations

from train.methods.base import EpochContext, Method, MethodOptions

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} missing or already registered")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


# Importing the modules registers them (a new method is a new file plus one line here).
from train.methods import bigan, deepcluster, monogan, rotnet, supervised  # noqa: E402, F401

__all__ = ["METHODS", "EpochContext", "Method", "MethodOptions", "get_method", "register_method"]
