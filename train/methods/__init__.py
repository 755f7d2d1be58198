"""The method registry: a method is one file, a :class:`Method` subclass decorated with ``@register_method``.

The registry (:class:`train.plugins.Registry`) imports every module of this package (``pkgutil``) and the plugin
files named in ``SINGLE_IMAGE_SSL_PLUGINS`` when it is first read, so a new method is one new file and no other
edit: the ``train`` command, its help and examples, the tests (parametrised over :func:`list_methods`),
``experiments/reproduce.py`` and the benches all read what the method class declares (docs/architecture.md,
"How to add a method").

Importing this package does not import torch: ``train --help`` lists the methods from :func:`method_summaries`,
which reads the method files' source, and the method classes (and torch) are imported only when a method is used.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.plugins import PLUGINS_ENV, Registry

if TYPE_CHECKING:
    from train.methods.base import EpochContext, Method, MethodOptions, RunContext

METHODS: Registry[type[Method]] = Registry("method", "train.methods")
_BASE_NAMES = ("EpochContext", "Method", "MethodOptions", "RunContext")


def __getattr__(name: str) -> Any:
    # the base classes, re-exported as before, imported (with torch) on first use
    if name in _BASE_NAMES:
        from train.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def summary_line(cls: type[Method]) -> str:
    """The first paragraph of a method's help: its ``summary``, else its docstring's first paragraph."""
    return cls.summary or (cls.__doc__ or cls.name).strip().split("\n\n")[0].replace("\n", " ")


def method_summaries() -> dict[str, str]:
    """name -> :func:`summary_line` of every method, sorted by name, without importing a method (or torch) where it
    can: the package's files are read as source, where each ``@register_method`` class gives its ``name`` and
    ``summary`` as literal strings. With plugins configured, or a class that computes either, the registry is read
    (importing everything), so the answer is always the registry's."""
    found = {} if os.environ.get(PLUGINS_ENV, "").strip() else _declared_summaries(Path(__file__).parent)
    if found is None or not found:
        found = {name: summary_line(METHODS[name]) for name in METHODS}
    return dict(sorted(found.items()))


def _declared_summaries(folder: Path) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef) or not any(
                    isinstance(d, ast.Name) and d.id == "register_method" for d in node.decorator_list):
                continue
            literal = {t.id: s.value.value for s in node.body if isinstance(s, ast.Assign)
                       for t in s.targets if isinstance(t, ast.Name) and t.id in ("name", "summary")
                       and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)}
            if "name" not in literal:
                return None
            text = literal.get("summary") or (ast.get_docstring(node) or literal["name"])
            found[literal["name"]] = text.strip().split("\n\n")[0].replace("\n", " ")
    return found


__all__ = ["METHODS", "EpochContext", "Method", "MethodOptions", "RunContext", "get_method", "list_methods",
           "method_summaries", "register_method", "summary_line"]
