"""Each stage's command checked against the options of the tool command it runs (``pipeline render``, ``train
METHOD``, ``probe linear``...), read from the tools' click commands, so that a preset's typo fails when the preset
is loaded, before any stage runs, rather than when its stage starts hours later.

Reading ``train METHOD``'s options imports the method (and torch): about two seconds, once per driver.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import click

from experiments.stage import Stage


class PresetError(ValueError):
    """A stage of a preset names a command or an option its tool does not have."""


def _groups() -> dict[str, click.Group]:
    # the console scripts' groups (setup.cfg), imported when a preset is checked: `--help` stays without them
    from pipeline.cli import main as pipeline
    from probe.cli import main as probe
    from train.cli import main as train

    return {"pipeline": pipeline, "train": train, "probe": probe}


@functools.cache
def command_options(tool: str, name: str) -> dict[str, bool] | None:
    """`tool name`'s options, each with whether it takes a value; None when the tool has no such command."""
    group = _groups()[tool]
    command = group.get_command(click.Context(group), name)
    if command is None:
        return None
    options = {"--help": False}
    for param in command.params:
        if isinstance(param, click.Option):
            takes_value = not (param.is_flag or param.count)
            options.update({opt: takes_value for opt in param.opts if opt.startswith("--")})
            options.update({opt: False for opt in param.secondary_opts})
    return options


def check_command(command: list[str]) -> str | None:
    """What is wrong with a tool's command line (one line), or None; commands of other programs are not checked."""
    tool = Path(command[0]).name
    if tool not in ("pipeline", "train", "probe") or len(command) < 2:
        return None
    options = command_options(tool, command[1])
    if options is None:
        return f"`{tool}` has no command {command[1]!r}"
    args = iter(command[2:])
    for arg in args:
        if not arg.startswith("--"):
            continue  # an argument (DATA, ENCODER) or a short option
        flag, has_value, _ = arg.partition("=")
        if flag not in options:
            return f"`{tool} {command[1]}` has no option {flag}"
        if options[flag] and not has_value:
            next(args, None)  # its value, which may look like an option
    return None


def check_stages(stages: Iterable[Stage], preset: str) -> None:
    """Refuse (PresetError, one line naming the preset, the stage and the option) the first stage whose command its
    tool would refuse for an unknown command or option."""
    for stage in stages:
        if (problem := check_command(stage.command)) is not None:
            raise PresetError(f"preset {preset!r}, stage {stage.name}: {problem}")
