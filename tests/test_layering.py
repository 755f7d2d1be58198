"""The layers: probe -> train -> pipeline -> common, no arrow back; probe uses train's parts, never its training loop;
inside train, the sub-packages stand on each other in one order (TRAIN_RANKS)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what each package may not import (lazy imports inside functions included)
FORBIDDEN = {"common": ("pipeline", "train", "probe", "experiments"), "pipeline": ("train", "probe", "experiments"),
             "train": ("probe", "experiments"), "probe": ("train.run", "train.cli", "experiments")}
# train's rooms, lowest first: a module imports only rooms of a lower rank than its own, or its own room. The process
# (devices, process group, signals) and the registries' discovery hold everything up; readers, networks, losses and
# augmentations stand on them; methods on those; the monitors watch methods; a run drives all; the CLI builds runs.
TRAIN_RANKS = {"process": 0, "plugins": 0, "data": 1, "models": 1, "losses": 1, "augment": 1, "methods": 2,
               "monitors": 3, "run": 4, "cli": 5}
# experiments/ drives the tools from above them; inside it, each module imports only modules of lower ranks, so there
# is no import loop and a target is a leaf: the runner, then what builds stages and reports, then the paper's shared
# CIFAR rows, then the targets (and the demo), then the command line, then the scripts that run it
EXPERIMENT_RANKS = {"experiments.stage": 0, "experiments.tool_options": 1, "experiments.registry": 1,
                    "experiments.commands": 1, "experiments.report": 1, "experiments.paper_cifar": 2,
                    "experiments.targets": 3, "experiments.make_demo": 3, "experiments.cli": 4,
                    "experiments.__main__": 5, "experiments.reproduce": 5, "experiments.demo": 5}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``: annotations only, which no layer rule is about."""
    return {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
            and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for stmt in node.body for inner in ast.walk(stmt)}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) and id(node) not in skip
             for alias in node.names}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_the_layers(package):
    for path in sorted((REPO / package).rglob("*.py")):
        bad = sorted(name for name in _imports(path) for banned in FORBIDDEN[package]
                     if name == banned or name.startswith(banned + "."))
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"



def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rank(module: str) -> int:
    """A module's rank: its own, else its package's (a target module has the rank of experiments.targets)."""
    while module not in EXPERIMENT_RANKS:
        assert "." in module, f"{module}: no rank in EXPERIMENT_RANKS"
        module = module.rpartition(".")[0]
    return EXPERIMENT_RANKS[module]


def test_experiments_modules_import_only_lower_ranks():
    modules = {_module_name(path): path for path in (REPO / "experiments").rglob("*.py")}
    for module, path in sorted(modules.items()):
        if module == "experiments":
            continue
        # an imported name that is a module of experiments/ (a function's name stands for its module)
        imported = {name.rpartition(".")[0] if name not in modules else name for name in _imports(path)
                    if name.startswith("experiments.")}
        bad = sorted(name for name in imported if name in modules and _rank(name) >= _rank(module))
        assert not bad, f"{path.relative_to(REPO)} (rank {_rank(module)}) imports {bad}"


def _room(module: str) -> str | None:
    """The sub-package (or top-level module) of train that ``module`` is in; None for the package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "train" and len(parts) > 1 else None


def test_train_rooms_import_only_lower_ranks():
    rooms = {path.relative_to(REPO / "train").parts[0].removesuffix(".py") for path in (REPO / "train").iterdir()
             if path.suffix == ".py" and path.stem != "__init__" or (path / "__init__.py").is_file()}
    assert rooms == set(TRAIN_RANKS), f"give every room of train/ a rank: {sorted(rooms ^ set(TRAIN_RANKS))}"
    for path in sorted((REPO / "train").rglob("*.py")):
        room = _room(_module_name(path))
        if room is None:
            continue
        bad = sorted(name for name in _imports(path) if (other := _room(name)) not in (None, room)
                     and TRAIN_RANKS[other] >= TRAIN_RANKS[room])
        assert not bad, f"{path.relative_to(REPO)} ({room}, rank {TRAIN_RANKS[room]}) imports {bad}"
