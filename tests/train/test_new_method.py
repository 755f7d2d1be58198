"""Acceptance (issue 18): a new method is one file. A renamed copy of RotNet's file, written into a temporary folder
and named in SINGLE_IMAGE_SSL_PLUGINS, is a `train` subcommand with its help and trains to an encoder.pt with no
other edit; a method trains a plugin encoder (the tiny ResNet of tests/plugins/tinyres.py); a broken plugin is one
line, not a traceback at import."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# In a child process: the registries of this one must not learn the plugins (other tests check what they list).
DRIVER = """
import json, sys
from click.testing import CliRunner
from train.cli import main
results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, args)
    results.append({"code": r.exit_code, "output": r.output, "error": repr(r.exception) if r.exception else None})
print(json.dumps(results))
"""
QUICK = ["--arch", "cifar", "--max-steps", "3", "--batch-size", "16", "--workers", "0", "--device", "cpu",
         "--no-progress", "--shuffle-buffer", "64", "--head-dim", "64"]


def rotcopy_source() -> str:
    """RotNet's file with the method renamed: what a user starting a new method from RotNet would write."""
    text = (REPO / "train" / "methods" / "rotnet.py").read_text()
    text = text.replace('name = "rotnet"', 'name = "rotcopy"').replace("train rotnet ", "train rotcopy ")
    return re.sub(r"\bRotNet\b", "RotCopy", text)


def _env(plugins: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SINGLE_IMAGE_SSL_PLUGINS": str(plugins)}


def _invoke(plugins: Path, *commands: list) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([[str(a) for a in c] for c in commands])],
                          capture_output=True, text=True, env=_env(plugins), cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def plugins(tmp_path) -> Path:
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    (folder / "rotcopy.py").write_text(rotcopy_source())
    (folder / "tinyres.py").write_text((REPO / "tests" / "plugins" / "tinyres.py").read_text())
    return folder


def test_a_method_file_in_a_plugin_folder_is_a_train_command_that_writes_an_encoder(plugins, tiny_set, tmp_path):
    listing, helped, trained, on_tinyres = _invoke(
        plugins, ["--help"], ["rotcopy", "--help"],
        ["rotcopy", tiny_set, "--out", tmp_path / "copy", *QUICK],
        ["rotnet", tiny_set, "--out", tmp_path / "tiny", *QUICK[:1], "tinyres", *QUICK[2:]])
    assert listing["code"] == 0 and re.search(r"^\s+rotcopy\s+RotCopy \(Gidaris", listing["output"], re.M)
    assert helped["code"] == 0 and "train rotcopy shards/mono-a" in helped["output"], helped
    assert "--milestones" in helped["output"] and "--manifest" in helped["output"]
    for run, out in ((trained, "copy"), (on_tinyres, "tiny")):
        assert run["code"] == 0 and run["error"] is None, run
        assert "done: 3 steps" in run["output"] and (tmp_path / out / "encoder.pt").is_file()
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["method"] == "rotcopy" and config["options"]["head_dim"] == 64
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["arch"] == "tinyres"


def test_a_broken_plugin_is_one_line_and_does_not_break_the_import(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('not today')\n")
    proc = subprocess.run([sys.executable, "-c", "import train.cli"], capture_output=True, text=True,
                          env=_env(broken), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for args in (["--help"], ["rotnet", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "train.cli", *args], capture_output=True, text=True,
                              env=_env(broken), cwd=REPO, timeout=300)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout, proc.stderr)
        assert proc.stderr == f"Error: {broken}: the plugin failed to import (RuntimeError: not today)\n", args


def test_the_method_listing_read_from_source_is_the_registrys():
    from train.methods import METHODS, _declared_summaries, method_summaries, summary_line

    from_source = _declared_summaries(REPO / "train" / "methods")
    assert from_source == {name: summary_line(METHODS[name]) for name in METHODS}  # no plugins in this process
    assert list(method_summaries()) == sorted(METHODS)


def test_train_and_probe_help_start_without_torch():
    # `train --help` lists every method without importing one (nor torch); `probe --help` and the experiments'
    # driver start without torch as well (bench/results/test-suite.md has the start-up times)
    code = ("import sys\nfrom click.testing import CliRunner\nfrom {module} import main\n"
            "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "print(r.output)\nprint('torch imported' if 'torch' in sys.modules else 'no torch')")
    env = {k: v for k, v in os.environ.items() if k != "SINGLE_IMAGE_SSL_PLUGINS"}
    for module in ("train.cli", "probe.cli"):
        done = subprocess.run([sys.executable, "-c", code.format(module=module)], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("no torch"), (module, done.stdout[-300:])
        if module == "train.cli":
            assert all(re.search(rf"^\s+{name}\s", done.stdout, re.M) for name in ("rotnet", "dino", "supervised"))
    driver = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['reproduce', '--help']\n"
                             "sys.path.insert(0, 'experiments')\nimport reproduce\n"
                             "print('torch imported' if 'torch' in sys.modules else 'no torch')"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert driver.stdout.strip().endswith("no torch"), driver.stdout[-300:] + driver.stderr[-300:]
