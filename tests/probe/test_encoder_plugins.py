"""Acceptance (issue 18): a new encoder is one file. A tiny ResNet-style encoder (taps stage1..stage3), written into
a temporary folder and named in SINGLE_IMAGE_SSL_PLUGINS, is probed, fine-tuned and drawn by the unchanged CLI,
and the contract tests of tests/train/test_models.py pick it up without an edit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli import main
from train.models import list_encoders

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "plugins" / "tinyres.py"
QUICK = ("--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--threads", "1")


@pytest.fixture
def plugin_env(tmp_path):
    folder = tmp_path / "my-encoders"
    folder.mkdir()
    shutil.copy(PLUGIN, folder / "tinyres.py")
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SINGLE_IMAGE_SSL_PLUGINS": str(folder)}


def _run(env: dict, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_probe_linear_and_filters_accept_a_plugin_encoder(tmp_path, writers, plugin_env):
    cifar = f"cifar10:{writers.cifar10(tmp_path / 'data', per_batch=8, test=10)}"
    _run(plugin_env, "-m", "probe.cli", "linear", "random:tinyres", "--data", cifar, "--out", tmp_path / "lin",
         *QUICK)
    results = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert list(results["layers"]) == ["stage1", "stage2", "stage3"]
    assert results["layers"]["stage3"]["dims"] == 64 * 8 * 8  # CIFAR style: whole maps, no pooling
    assert results["encoder"]["arch"] == "tinyres"

    _run(plugin_env, "-m", "probe.cli", "filters", "random:tinyres", "--out", tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_finetune_accepts_a_plugin_encoder_and_writes_a_probeable_one(tmp_path, writers, plugin_env):
    """stage1 frozen, stage2 kept, stage3 fresh, the registry's default (linear) head; the encoder.pt written is a
    normal encoder file of the plugin's architecture, which the probes read back. Both commands run in one
    process (the CLI as its entry point calls it), to pay for importing torch once."""
    cifar = f"cifar10:{writers.cifar10(tmp_path / 'data', per_batch=8, test=10)}"
    commands = [["finetune", "random:tinyres", "--data", cifar, "--out", str(tmp_path / "ft"), "--freeze", "stage1",
                 "--keep", "stage2", *QUICK],
                ["linear", str(tmp_path / "ft" / "encoder.pt"), "--data", cifar, "--layers", "stage3", "--out",
                 str(tmp_path / "ft-lin"), *QUICK]]
    _run(plugin_env, "-c", "import sys, json\nfrom probe.cli import main\n"
         "for args in json.loads(sys.argv[1]):\n    main.main(args, standalone_mode=False)\n", json.dumps(commands))
    tuned = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert tuned["protocol"]["frozen"] == ["stage1"] and tuned["encoder"]["arch"] == "tinyres"
    assert list(json.loads((tmp_path / "ft-lin" / "results.json").read_text())["layers"]) == ["stage3"]


def test_the_contract_tests_cover_a_plugin_encoder_without_an_edit(plugin_env):
    proc = _run(plugin_env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/train/test_models.py",
                "-k", "contract and tinyres")
    assert "5 passed" in proc.stdout  # pytest exits non-zero (5) if no test were collected for it


def test_a_broken_plugin_is_one_line_naming_the_file(tmp_path, monkeypatch):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_anywhere\n")
    monkeypatch.setenv("SINGLE_IMAGE_SSL_PLUGINS", str(broken))
    result = CliRunner().invoke(main, ["filters", "random:cifar", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and not (tmp_path / "x.png").exists()
    assert result.output.strip().splitlines() == [
        f"Error: {broken}: the plugin failed to import (ModuleNotFoundError: No module named "
        "'no_such_module_anywhere')"]


def test_an_unknown_architecture_lists_the_registered_ones(tmp_path):
    result = CliRunner().invoke(main, ["filters", "random:tinyres", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: random:tinyres: unknown architecture 'tinyres' (known: {', '.join(list_encoders())})"]
