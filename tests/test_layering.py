"""The layers: probe -> train -> pipeline, no arrow back; probe uses train's parts, never its training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what each package may not import (lazy imports inside functions included)
FORBIDDEN = {"pipeline": ("train", "probe"), "train": ("probe",), "probe": ("train.loop", "train.cli")}


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
