"""The layers: probe -> train -> pipeline, no arrow back; probe uses train's parts, never its training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what each package may not import (lazy imports inside functions included)
FORBIDDEN = {"pipeline": ("train", "probe", "experiments"), "train": ("probe", "experiments"),
             "probe": ("train.loop", "train.cli", "experiments")}
# experiments/ drives the tools from above them; inside it, each module imports only modules of lower ranks, so there
# is no import loop and a target is a leaf: the runner, then what builds stages and reports, then the paper's shared
# CIFAR rows, then the targets (and the demo), then the command line, then the scripts that run it
EXPERIMENT_RANKS = {"experiments.stage": 0, "experiments.tool_options": 1, "experiments.registry": 1,
                    "experiments.commands": 1, "experiments.report": 1, "experiments.paper_cifar": 2,
                    "experiments.targets": 3, "experiments.make_demo": 3, "experiments.cli": 4,
                    "experiments.__main__": 5, "experiments.reproduce": 5, "experiments.demo": 5}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for node in ast.walk(tree):
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
