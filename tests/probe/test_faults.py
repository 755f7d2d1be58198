"""A full or failing disk during `probe`: one line naming the file, exit 1, nothing half-written, a rerun completes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from probe.cli import main

from ..faults import FullDisk


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result, path) -> None:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {path}: No space left on device"


@pytest.mark.parametrize("target", ["results.json", "results.md"])
def test_linear_on_a_full_disk_is_one_line_and_a_rerun_completes(tmp_path, writers, monkeypatch, target):
    writers.cifar10(tmp_path / "data", per_batch=4, test=6)
    out = tmp_path / "out"
    args = ["linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out, "--layers", "conv1",
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu"]
    with monkeypatch.context() as patch:
        FullDisk(patch, target, after=100)
        _one_error_line(_run(*args), out / target)
    assert not (out / target).exists() and not list(out.glob("*.tmp-*"))
    assert _run(*args).exit_code == 0
    assert json.loads((out / "results.json").read_text())["task"] == "linear"


def test_filters_and_report_on_a_full_disk_are_one_line(tmp_path, monkeypatch):
    picture = tmp_path / "conv1.png"
    with monkeypatch.context() as patch:
        FullDisk(patch, "conv1.png", after=100)
        _one_error_line(_run("filters", "random:cifar", "--out", picture), picture)
    assert not picture.exists() and not list(tmp_path.glob("*.tmp-*"))
    assert _run("filters", "random:cifar", "--out", picture).exit_code == 0 and picture.exists()


@pytest.mark.parametrize("target", ["report.md", "report.png"])
def test_report_on_a_full_disk_is_one_line(tmp_path, writers, monkeypatch, target):
    writers.cifar10(tmp_path / "data", per_batch=4, test=6)
    assert _run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", tmp_path, "--layers",
                "conv1", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress",
                "--device", "cpu").exit_code == 0
    with monkeypatch.context() as patch:
        FullDisk(patch, target, after=100)
        _one_error_line(_run("report", tmp_path / "results.json", "--out", tmp_path / "report.md"),
                        tmp_path / target)
    assert not (tmp_path / target).exists() and not list(tmp_path.glob("*.tmp-*"))
