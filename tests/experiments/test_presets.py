"""Presets are checked when they are loaded: every stage's command against the options of the tool command it runs,
so that a typo is one line before any stage runs. The targets are found by the registry, one module each."""

import copy
import json
import sys
from pathlib import Path

import pytest

from experiments import cli, make_demo
from experiments.registry import targets
from experiments.stage import Stage, ran_before
from experiments.tool_options import PresetError, check_command, check_stages
from pipeline.sources import default_pool

from ..conftest import write_cifar100
from .test_continuum import write_shared_layout

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_every_module_of_experiments_targets_registers_its_target_in_the_commands_order():
    modules = sorted(p.stem for p in (ROOT / "experiments" / "targets").glob("*.py") if p.stem != "__init__")
    assert sorted(targets()) == modules
    # the order of --help's choices
    assert list(targets()) == ["cifar10", "ablation", "cifar100", "modern", "continuum", "distill"]


def test_every_preset_of_every_target_and_of_the_demo_passes_the_check(tmp_path):
    src, cifar100 = default_pool()[1], write_cifar100(tmp_path)
    shared_layout = write_shared_layout(tmp_path / "shared")  # continuum finds Images A, C and the sample beside B
    for name, target in targets().items():
        data = f"cifar100:{cifar100}" if name == "cifar100" else "cifar10:/data/cifar-10-batches-py"
        for preset in target.presets:
            image_b = shared_layout if name == "continuum" else src
            stages, _ = cli.load(target, preset, tmp_path / name, image_b, data, "cpu")
            assert stages, (name, preset)
    for preset in make_demo.PRESETS:
        check_stages(make_demo.demo_stages(tmp_path / "demo", make_demo.PRESETS[preset], src, 0, "cifar10:/d", "cpu"),
                     preset)


def test_a_typo_in_a_preset_is_refused_when_it_is_loaded_before_any_stage(tmp_path, monkeypatch):
    target = targets()["cifar10"]
    typo = copy.deepcopy(target.presets["quick"])
    typo["train"]["rotnet"] = [a.replace("--milestones", "--milestone") for a in typo["train"]["rotnet"]]
    monkeypatch.setitem(target.presets, "quick", typo)
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as refused:
        cli.main(["cifar10", "--preset", "quick", "--work", str(work), "--src", str(default_pool()[1]),
                  "--data", "cifar10:/data/cifar-10-batches-py", "--device", "cpu"])
    assert str(refused.value) == ("reproduce cifar10: preset 'quick', stage train-rotnet: `train rotnet` has no "
                                  "option --milestone")
    assert not work.exists()  # no stage ran, no record was written


def test_a_command_is_checked_against_its_tools_options():
    train, probe, pipeline = str(BIN / "train"), str(BIN / "probe"), str(BIN / "pipeline")
    assert check_command([train, "rotnet", "shards", "--epochs", "3", "--no-progress", "--lr=0.1"]) is None
    # an option's value is not read as an option, even when it looks like one
    assert check_command([probe, "linear", "random:cifar", "--data", "--not-an-option", "--epochs", "1"]) is None
    assert check_command([pipeline, "render", "--n-src", "1", "--no-scale"]) is None
    assert check_command([pipeline, "render", "--no-scales"]) == "`pipeline render` has no option --no-scales"
    assert check_command([probe, "linear", "x", "--epoch=3"]) == "`probe linear` has no option --epoch"
    assert check_command([train, "rotnett", "shards"]) == "`train` has no command 'rotnett'"
    assert check_command([sys.executable, "-c", "pass", "--anything"]) is None  # not a tool of the toolkit
    with pytest.raises(PresetError, match=r"^preset 'p', stage probe-x: `probe init-kmeans` has no option --n-image$"):
        check_stages([Stage("probe-x", [probe, "init-kmeans", "cifar", "--n-image", "4"], [])], "p")


def test_a_command_that_ran_to_completion_in_the_work_folder_is_not_checked_again(tmp_path):
    """Reading train's options imports torch: a driver resuming a preset checks only the commands not yet run."""
    stage = Stage("train-x", [str(BIN / "train"), "rotnet", "shards", "--epochs", "3"], [])
    records = tmp_path / "stages"
    assert not ran_before(stage, records)
    records.mkdir()
    (records / "train-x.json").write_text(json.dumps({"command": [*stage.command, "--resume"]}))
    assert ran_before(stage, records)  # a resumed attempt's record
    stage.command[-1] = "4"
    assert not ran_before(stage, records)  # the preset changed: its new command is checked
