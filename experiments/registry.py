"""The targets of `python -m experiments TARGET`: each module of ``experiments/targets/`` registers one, so a new
target is one new module there and no other edit (the command's choices and help read this registry)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.stage import Stage

# work, preset, src, data, device -> the stages in order, and the probes' results files with their report rows
Build = Callable[[Path, dict, Path, str, str], tuple[list[Stage], list[tuple[Path, str]]]]
# work, target, preset name, reports, finished stages' records, device, data, stages not yet run -> the report
Report = Callable[..., Path]


@dataclass(frozen=True)
class Target:
    name: str
    build: Build
    report: Report
    presets: dict[str, dict]
    work: str  # the default work folder, under runs/
    order: int  # the target's place in the command's list of choices
    # the one line that refuses a run without --data, for a target whose data set is not on the machine; None: the
    # shared CIFAR-10 copy is the default
    data_required: str | None = None


TARGETS_PACKAGE = "experiments.targets"
_TARGETS: dict[str, Target] = {}
_discovered: list[bool] = []  # [True] once every module of TARGETS_PACKAGE has been imported


def register(target: Target) -> Target:
    if target.name in _TARGETS:
        raise ValueError(f"target {target.name!r} registered twice")
    _TARGETS[target.name] = target
    return target


def targets() -> dict[str, Target]:
    """Every target, in the order of their `order`: the modules of experiments.targets are imported on first use."""
    if not _discovered:
        # found by name, as train's methods are: the registry depends on no target's code. A module imported
        # before (by a test, or another target) has registered already and is not imported again.
        package = importlib.import_module(TARGETS_PACKAGE)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{TARGETS_PACKAGE}.{module.name}")
        _discovered.append(True)
    return dict(sorted(_TARGETS.items(), key=lambda item: item[1].order))


def get_target(name: str) -> Target:
    try:
        return targets()[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(targets())}") from None
