"""The method registry: a method is one file, a :class:`Method` subclass decorated with ``@register_method``.

The registry (:class:`train.plugins.Registry`) imports every module of this package (``pkgutil``) and the plugin
files named in ``SINGLE_IMAGE_SSL_PLUGINS`` when it is first read, so a new method is one new file and no other
edit: the ``train`` command, its help and examples, the tests (parametrised over :func:`list_methods`),
``experiments/reproduce.py`` and the benches all read what the method class declares (docs/architecture.md,
"How to add a method").
"""

from __future__ import annotations

from train.methods.base import EpochContext, Method, MethodOptions, RunContext
from train.plugins import Registry

METHODS: Registry[type[Method]] = Registry("method", "train.methods")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register ``cls`` under ``cls.name`` (a missing or duplicate name is an error)."""
    if not cls.name:
        raise ValueError(f"method class {cls.__qualname__} declares no name")
    return METHODS.add(cls.name, cls)


def list_methods() -> list[str]:
    """Every registered method's name, sorted (the package's modules and the plugins)."""
    return sorted(METHODS)


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(list_methods())}") from None


__all__ = ["METHODS", "EpochContext", "Method", "MethodOptions", "RunContext", "get_method", "list_methods",
           "register_method"]
