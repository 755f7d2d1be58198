"""Every option of every command of the three command lines is checked before any work.

The cases are derived from the click objects themselves, so a command or option added later is covered, and a
numeric option added without a range (or a text option without choices) fails ``test_every_option_declares_...``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pipeline.cli
import probe.cli
import train.cli
from common.errors import OptionError
from common.options import IntList, check_fields, click_option, opt, value_problem
from probe.protocols import FinetuneProtocol, ProbeProtocol
from train.methods import METHODS
from train.run.loop import TrainConfig
from train.run.loop import train as run_training

CLIS = {"pipeline": pipeline.cli.main, "train": train.cli.main, "probe": probe.cli.main}

# Numeric options for which every value is legal, with the reason. None today: even seeds have a range (train and
# probe: 0..2**32-1, since per-epoch seeds are derived from them by multiplication; pipeline render: 0..2**64-1,
# the Philox key). An entry here is "CLI COMMAND --option": reason.
ANY_NUMBER: dict[str, str] = {}

# Text options whose legal values are no fixed list; each is checked before any work where it is used.
FREE_TEXT = {
    "--data": "a KIND:PATH data specification, opened (and refused in one line) before any work",
    "--manifest": "a path or URL of a rendered set's manifest, read before any work",
    "--layers": "layer names of the encoder given, known only once it is opened (before any work)",
    "--freeze": "a layer name of the encoder given (or none), checked against it",
    "--keep": "a layer name of the encoder given (or all), checked against it",
    "--device": "auto, cpu, cuda or cuda:N: probe checks it with train.process.devices.pick_device before any work",
    "--against": "a part of a paper row's label, refused with the list of rows when it matches none",
    "--compare": "an encoder (encoder.pt or random:ARCH), opened before any work",
    "--labels": "panel names, one per encoder given: another count is refused before any picture is drawn",
    "--results": "a results.json per encoder (or '-'): another count, or the results of another encoder, is refused "
                 "before any picture is drawn",
    "--content-tap": "a tap name of the encoder given, checked against it before the optimisation",
    "--style-taps": "tap names of the encoder given, checked against it before the optimisation",
    "--unit": "TAP:INDEX, its form refused at once and the tap and index checked against the encoder",
    "--retrieve": "a KIND:PATH data specification, opened (and refused in one line) before the optimisation",
    "--knn-data": "a labelled set ([KIND:]PATH), opened (and refused in one line) before any work",
    "--knn-tap": "a tap name of the run's encoder, checked against it before any work",
    "--online-probe-tap": "a tap name of the run's encoder, checked against it before any work",
    "--teacher": "train distill's teacher (an encoder.pt or random:ARCH), opened and checked before any work",
}

# Parameter types of the project that are not click ranges or choices, with a value each refuses.
CUSTOM_BAD = {"DEVICE": "tpu", "I/N": "3/2"}


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    # through click's listing API: train's group builds its commands from the method registry when asked
    ctx = click.Context(group)
    for name, command in sorted((n, group.get_command(ctx, n)) for n in group.list_commands(ctx)):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _options():
    for cli, group in CLIS.items():
        for path, command in _commands(group):
            for param in command.params:
                if isinstance(param, click.Option) and not param.is_flag and param.name != "help":
                    yield cli, path, command, param


def _flag(param: click.Option) -> str:
    return max(param.opts, key=len)


def _bad_values(param: click.Option) -> list[str]:
    """Values just outside the declared type: min - 1 / max + 1 (the bound itself when open), nan for a float
    range, a value no choice holds, or what the project's own types refuse."""
    t = param.type
    if isinstance(t, click.Choice):
        return ["no-such-choice"]
    if isinstance(t, (click.IntRange, click.FloatRange)):
        values: list[object] = []
        if t.min is not None:
            below = t.min if t.min_open else t.min - 1
            values.append(below - 1 if below == getattr(t, "auto", None) else below)
        if t.max is not None:
            values.append(t.max if t.max_open else t.max + 1)
        if isinstance(t, click.FloatRange):
            values.append("nan")
        return [str(v) for v in values]
    if isinstance(t, IntList):
        return [str(t.bounds.min - 1) if t.bounds.min is not None else "1,x"] + (["3,2"] if t.increasing else [])
    if t.name in CUSTOM_BAD:
        return [CUSTOM_BAD[t.name]]
    return []


def _required_args(command: click.Command, tmp_path: Path) -> list[str]:
    """Values for the required parameters, none of which exists: whatever is refused must be refused first."""
    args: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            args.append(str(tmp_path / "in"))
        elif isinstance(param, click.Option) and param.required:
            args += [_flag(param), str(tmp_path / "out.png")]
    return args


CASES = [pytest.param(cli, path, param.name, value, id=f"{cli}-{'-'.join(path)}-{_flag(param)}={value}")
         for cli, path, command, param in _options() for value in _bad_values(param)]


def test_every_option_declares_its_legal_values():
    """A numeric option without a range, or a text option without choices, must be listed above with a reason."""
    unchecked = []
    for cli, path, _, param in _options():
        t, name = param.type, f"{cli} {' '.join(path)} {_flag(param)}"
        if isinstance(t, (click.types._NumberParamTypeBase, click.types.BoolParamType)):
            if not isinstance(t, (click.IntRange, click.FloatRange)) and name not in ANY_NUMBER:
                unchecked.append(f"{name}: {t.name} without a range")
        elif isinstance(t, click.types.StringParamType) and _flag(param) not in FREE_TEXT:
            unchecked.append(f"{name}: free text without choices")
        elif not isinstance(t, (click.Choice, click.Path, click.types.StringParamType, IntList)) \
                and t.name not in CUSTOM_BAD:
            unchecked.append(f"{name}: type {t.name} has no bad value in this test")
    assert not unchecked, "\n".join(unchecked)
    assert len(CASES) > 100  # every command of the three tools contributes


@pytest.mark.parametrize(("cli", "path", "name", "value"), CASES)
def test_an_out_of_range_value_is_a_one_line_usage_error_before_any_work(cli, path, name, value, tmp_path):
    command = dict(_commands(CLIS[cli]))[path]
    param = next(p for p in command.params if p.name == name)
    # the bad option first: click checks parameters in the order given, so nothing else can fail before it
    args = [*path, _flag(param), value, *_required_args(command, tmp_path)]
    result = CliRunner().invoke(CLIS[cli], args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and errors[0].startswith(f"Error: Invalid value for '{_flag(param)}'"), result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


SEMANTIC_CASES = [  # rules a range cannot state: between options, or against the architecture
    (["train", "bigan", "--arch", "cifar", "--encoder-size", "16"], "--encoder-size", "below the GAN size 32"),
    (["train", "bigan", "--arch", "alexnet", "--encoder-size", "48", "--gan-size", "8"], "--encoder-size",
     "too small for the alexnet encoder, whose layers need at least 63 px"),
    (["train", "bigan", "--gan-size", "12"], "--gan-size", "a power of two"),
    (["train", "monogan", "--gan-size", "24"], "--gan-size", "a power of two"),
    (["train", "rotnet", "--milestones", "10,5"], "--milestones", "not strictly increasing"),
    (["train", "supervised", "--milestones", "3,3"], "--milestones", "not strictly increasing"),
    (["probe", "linear", "random:cifar", "--data", "cifar10:x", "--milestones", "15,5"], "--milestones",
     "not strictly increasing"),
]


@pytest.mark.parametrize(("args", "flag", "problem"), SEMANTIC_CASES)
def test_rules_between_options_are_usage_errors_before_any_work(args, flag, problem, tmp_path):
    cli, *rest = args
    out = ["--out", str(tmp_path / "out")]
    if cli == "train":
        rest = [rest[0], str(tmp_path / "no-such-set"), *rest[1:]]
    result = CliRunner().invoke(CLIS[cli], [*rest, *out])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert errors[0].startswith(f"Error: Invalid value for '{flag}'") and problem in errors[0], result.output
    assert list(tmp_path.iterdir()) == []


def _field_bad_values(f: dataclasses.Field, kind) -> list[object]:
    bounds = f.metadata["bounds"]
    if kind is bool:
        return ["yes"]
    if kind is str:  # text without choices is free (a layer name), refused only when it is no text
        return ["no-such-choice", 3] if f.metadata["choices"] else [3]
    if kind is list or typing.get_origin(kind) in (list, tuple):
        return [[bounds.min - 1], [3, 2]] if f.metadata["increasing"] else [[bounds.min - 1]]
    values: list[object] = ["1"]
    if bounds.min is not None:
        below = bounds.min if bounds.min_open else bounds.min - 1
        values.append(below - 1 if below == bounds.auto else below)
    if bounds.max is not None:
        values.append(bounds.max if bounds.max_open else bounds.max + 1)
    if kind is float:
        values += [math.nan, math.inf]
    return values


def test_the_python_api_refuses_what_the_command_line_refuses():
    cases = 0
    for method in METHODS.values():
        hints = typing.get_type_hints(method.Options)
        for f in dataclasses.fields(method.Options):
            kind = hints[f.name]
            default = getattr(method.Options(), f.name)
            assert value_problem(f, kind, default) is None, (method.name, f.name)
            assert f.metadata.get("choices") or kind is not str or "--" + f.name.replace("_", "-") in FREE_TEXT, (
                method.name, f.name, "text without choices")
            for value in _field_bad_values(f, kind):
                with pytest.raises(OptionError, match=f"Invalid value for '--{f.name.replace('_', '-')}'"):
                    method.Options(**{f.name: value})
                cases += 1
    assert cases > 100


@pytest.mark.parametrize("protocol", [ProbeProtocol, FinetuneProtocol], ids=lambda p: p.__name__)
def test_probe_protocols_refuse_from_the_python_api_what_the_command_line_refuses(protocol):
    hints = typing.get_type_hints(protocol)
    cases = 0
    for f in dataclasses.fields(protocol):
        kind = hints[f.name]
        assert value_problem(f, kind, getattr(protocol(), f.name)) is None, f.name
        for value in _field_bad_values(f, kind):
            with pytest.raises(OptionError, match=f"Invalid value for '--{f.name.replace('_', '-')}'"):
                protocol(**{f.name: value})
            cases += 1
    assert cases >= 25
    assert protocol(milestones=[2, 4]).milestones == (2, 4)  # as the command line parses it, held as a tuple


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"workers": -1}, {"seed": -1},
                                     {"seed": 2**32}, {"log_every": 0}, {"ckpt_every": -1}, {"max_steps": 0},
                                     {"shuffle_buffer": -1}, {"arch": "vgg"}, {"options": {"k": 1}},
                                     {"options": {"kmeans_backend": "cuml"}}, {"options": {"no_such": 1}}])
def test_train_refuses_bad_settings_before_any_work(setting, tmp_path):
    config = TrainConfig(method="deepcluster", data=str(tmp_path / "no-such-set"), out=str(tmp_path / "run"),
                         device="cpu", **setting)
    with pytest.raises(OptionError) as refused:
        run_training(config)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


@dataclasses.dataclass
class _Protocol:
    """A protocol dataclass outside `train` (as probe's will be): its options come from common.options alone."""

    epochs: int = opt(36, "training epochs", min=1)
    lr: float = opt(0.01, "learning rate", min=0, min_open=True)
    milestones: list[int] = opt([5, 15, 25], "epochs at which the rate drops", min=0, increasing=True)
    crop: str = opt("ten", "test crops", choices=("ten", "center"))
    flip: bool = opt(False, "mirror training images")

    def __post_init__(self) -> None:
        check_fields(self)


def test_any_dataclass_declares_its_options_once_for_the_command_line_and_the_python_api():
    command = click.Command("fit", params=[click_option(f, _Protocol) for f in dataclasses.fields(_Protocol)],
                            callback=lambda **kw: click.echo(repr(_Protocol(**kw))))
    shown = CliRunner().invoke(command, ["--help"]).output
    assert "--epochs INTEGER RANGE" in shown and "x>=1" in shown and "[ten|center]" in shown, shown
    assert "--flip / --no-flip" in shown and "[default: 5,15,25]" in shown, shown
    ok = CliRunner().invoke(command, ["--epochs", "2", "--milestones", "1,2", "--flip"])
    assert ok.exit_code == 0 and "epochs=2" in ok.output and "milestones=[1, 2]" in ok.output, ok.output
    for args, problem in [(["--epochs", "0"], "0 is not in the range x>=1."), (["--lr", "nan"], "nan is not in"),
                          (["--milestones", "5,3"], "5,3 is not strictly increasing."),
                          (["--crop", "five"], "'five' is not one of 'ten', 'center'.")]:
        refused = CliRunner().invoke(command, args)
        assert refused.exit_code == 2 and problem in refused.output, refused.output
        name = args[0][2:]  # the Python API refuses the same value, in the same words
        python_value = {"epochs": 0, "lr": math.nan, "milestones": [5, 3], "crop": "five"}[name]
        with pytest.raises(OptionError, match=f"Invalid value for '--{name}'"):
            _Protocol(**{name: python_value})
