"""One hierarchy of plain errors, reported as one line by every command line."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pipeline.cli
import probe.cli
import train.cli
from common import errors
from common.cli_group import ErrorReportingGroup

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "pipeline", "train", "probe")
# The modules that build command lines; every other module is library code and raises plain exceptions.
CLI_MODULES = {"pipeline/cli.py", "common/cli_group.py", "common/options.py", "train/cli.py", "probe/cli.py",
               "probe/cli_init_kmeans.py"}


def _package_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, f"{package}.")]
    return names


def test_library_code_does_not_import_click():
    for path in sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        if str(path.relative_to(REPO)) in CLI_MODULES:
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "click" not in imported, path


def test_every_project_error_is_one_of_the_hierarchy_in_pipeline_errors():
    toolkit = {cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ToolkitError)}
    for name in _package_modules():
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, errors.ToolkitError) or issubclass(cls, click.ClickException):
                assert cls in toolkit or name.endswith(("cli", "cli_group")), f"{name}.{cls.__name__}"
    data_errors = [cls for cls in toolkit if cls.__name__ == "DataError"]
    assert data_errors == [errors.DataError]
    assert issubclass(errors.ShardSetError, errors.DataError) and issubclass(errors.SourceImageError, errors.DataError)
    assert issubclass(errors.EncoderFileError, errors.EncoderError)
    assert not issubclass(errors.ToolkitError, click.ClickException)


def _group_raising(error: BaseException) -> click.Group:
    @click.group(cls=ErrorReportingGroup)
    def main() -> None:
        pass

    @main.command()
    def run() -> None:
        raise error

    return main


@pytest.mark.parametrize(("error", "status", "line"), [
    (errors.DataError("data/x: no such folder"), 1, "Error: data/x: no such folder"),
    (errors.ShardSetError("set/m.json: malformed manifest"), 1, "Error: set/m.json: malformed manifest"),
    (errors.OptionError("Invalid value for '--k': -1 is not in the range x>=1."), 2,
     "Error: Invalid value for '--k': -1 is not in the range x>=1."),
    (errors.Interrupted("run/checkpoint.pt: interrupted at step 3 of 9, saved"), 130,
     "Stopped: run/checkpoint.pt: interrupted at step 3 of 9, saved"),
    # as a DataLoader worker re-raises it: the worker's traceback folded into the message
    (errors.SourceImageError("Caught SourceImageError in DataLoader worker process 0.\nOriginal Traceback:\n  ...\n"
                             "common.errors.SourceImageError: a/b.png: empty file\n"),
     1, "Error: a/b.png: empty file"),
    (OSError(28, "No space left on device", "run/encoder.pt"), 1, "Error: run/encoder.pt: No space left on device"),
])
def test_the_group_reports_each_kind_in_one_line_with_its_exit_status(error, status, line):
    result = CliRunner().invoke(_group_raising(error), ["run"])
    assert (result.exit_code, result.output) == (status, line + "\n")


def test_an_error_naming_no_file_is_a_bug_and_keeps_its_traceback():
    result = CliRunner().invoke(_group_raising(RuntimeError("bug")), ["run"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("cli", [pipeline.cli.main, train.cli.main, probe.cli.main])
def test_all_three_command_lines_use_the_reporting_group(cli):
    assert isinstance(cli, ErrorReportingGroup)
