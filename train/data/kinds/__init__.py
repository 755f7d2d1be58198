"""The data-kind registry: a data kind (the KIND of `KIND:PATH`) is one file, a :class:`DataKind` subclass decorated
with ``@register_kind``.

The registry (:class:`train.plugins.Registry`) imports every module of this package and the plugin files named in
``SINGLE_IMAGE_SSL_PLUGINS`` when it is first read, so a new kind is one new file and no other edit: the parser
(``train.data.specs.DataSpec``), `probe --data`, `train METHOD KIND:PATH` (the self-supervised methods read its train
split), `train supervised KIND:PATH`, and the help texts that list the kinds all read it (docs/architecture.md, "How to
add a data kind"). Kinds are listed in the order they register: this package's modules by file name, then plugins.
"""

from __future__ import annotations

from train.data.kinds.base import DataKind
from train.plugins import Registry

KINDS: Registry[type[DataKind]] = Registry("data kind", "train.data.kinds")


def register_kind(cls: type[DataKind]) -> type[DataKind]:
    """Class decorator: register ``cls`` under ``cls.name`` (a missing or duplicate name is an error)."""
    if not cls.name:
        raise ValueError(f"data kind class {cls.__qualname__} declares no name")
    return KINDS.add(cls.name, cls)


def real_set_listing() -> str:
    """The prefixes `train METHOD DATA` names as real image sets, as its help lists them: the ImageNet-style kinds
    first, then the CIFAR-style ones, each in registry order ("imagefolder:, shards:, cifar10:, ...")."""
    kinds = sorted(KINDS.values(), key=lambda kind: kind.style != "imagenet")
    return ", ".join(f"{kind.name}:" for kind in kinds)


def probe_data_help() -> str:
    """The help of `probe --data`: each kind's ``probe_help`` in registry order, kinds in a row with the same text
    sharing one entry."""
    groups: list[tuple[list[str], str]] = []
    for kind in KINDS.values():
        text = kind.probe_help or kind.summary
        if groups and groups[-1][1] == text:
            groups[-1][0].append(kind.name)
        else:
            groups.append(([kind.name], text))
    entries = ", ".join(f"{' / '.join(names)} ({text})" for names, text in groups)
    return f"Data set as KIND:PATH. Kinds: {entries}."


def labelled_folder_listing() -> str:
    """The kinds the k-NN monitor's --knn-data takes (``labelled_folder``), sorted: "a, b or c"."""
    names = sorted(name for name, kind in KINDS.items() if kind.labelled_folder)
    return " or ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


__all__ = ["KINDS", "DataKind", "labelled_folder_listing", "probe_data_help", "real_set_listing", "register_kind"]
